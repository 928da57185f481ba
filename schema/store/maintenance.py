"""verify, orphan clean-up and compaction of a store (its data files through its
DataLocation: a local directory or an object store alike)."""

import dataclasses
import hashlib
import time

import pyarrow as pa
import pyarrow.parquet as pq

from . import catalog as cat
from . import segments
from . import artifacts as artifact_store
from ..errors import StoreDamageError
from ..formats.files import pid_alive

ORPHAN_GRACE_SECS = 3600.0   # an unregistered file this old is an orphan even if its owner lives


@dataclasses.dataclass
class VerifyReport:
    checked: int = 0
    blobs_checked: int = 0   # artifact blobs
    damaged: list = dataclasses.field(default_factory=list)     # (path, reason)
    orphans_removed: list = dataclasses.field(default_factory=list)
    in_flight: list = dataclasses.field(default_factory=list)   # unregistered, owner alive

    @property
    def ok(self):
        return not self.damaged

    def to_dict(self):
        return dataclasses.asdict(self) | {"ok": self.ok}


def remove_orphans(store, grace_secs=ORPHAN_GRACE_SECS, dry_run=False):
    """Removes unregistered files whose writer is gone (or that are older than the grace).

    A file between its write and its registration belongs to a live writer and is left alone;
    on an object store, or from another host, the writer cannot be asked, so only the grace
    applies. The registrations are read after the listing and once more for the files about
    to go, so a file registered meanwhile (by a writer that then exited) is never deleted.
    Returns (removed, in_flight) lists of paths as shown to people.
    """
    listed = list(store.data.files("data"))
    if not listed:   # a new store: its open reads nothing more (~1.5 ms of recorder.init)
        return [], []
    registered = {g.path for g in store.segments()} | set(artifact_store.registered_blobs(store))
    now = time.time()
    doomed, in_flight = [], []
    for rel, name, mtime in listed:
        if rel in registered:
            continue
        if store.data.local and rel.startswith(artifact_store.BLOB_DIR + "/"):
            mtime = artifact_store.blob_age_time(store.data, rel, mtime)
        owner = segments.parse_owner(name)
        dead_owner = (store.data.local and owner is not None and
                      segments.is_this_host(owner[0]) and not pid_alive(owner[1]))
        old = mtime is not None and now - mtime > grace_secs
        (doomed if dead_owner or old else in_flight).append(rel)
    if doomed:
        registered = ({g.path for g in store.segments()} |
                      set(artifact_store.registered_blobs(store)))
    removed = []
    for rel in doomed:
        if rel in registered:
            continue
        if not dry_run:
            try:
                store.data.remove(rel)
            except OSError:
                continue
        removed.append(store.data.show(rel))
    return removed, [store.data.show(r) for r in in_flight]


def verify(store, fix=True, grace_secs=ORPHAN_GRACE_SECS):
    """Checks every registered segment (exists, size, sha256, row count) and artifact blob
    (exists, size, sha256), and cleans orphans (unregistered files and blobs)."""
    report = VerifyReport()
    for g in store.segments():
        report.checked += 1
        reason = _check_segment(store.data, g)
        if reason:
            report.damaged.append((store.data.show(g.path), reason))
    checked, damaged = artifact_store.check_blobs(store)
    report.blobs_checked = checked
    report.damaged.extend(damaged)
    report.orphans_removed, report.in_flight = remove_orphans(store, grace_secs, dry_run=not fix)
    return report


def _check_segment(location, g):
    try:
        data = location.read_bytes(g.path)
    except FileNotFoundError:
        return "missing: the catalog registers it but the file does not exist"
    except OSError as e:
        return f"unreadable: {e}"
    if len(data) != g.size_bytes:
        return f"size {len(data)} bytes, catalog records {g.size_bytes} (truncated or rewritten)"
    digest = hashlib.sha256(data).hexdigest()
    if digest != g.sha256:
        return f"sha256 {digest[:12]}…, catalog records {g.sha256[:12]}…"
    try:
        rows = pq.read_metadata(pa.BufferReader(data)).num_rows
    except Exception as e:
        return f"not a readable Parquet file: {e}"
    if rows != g.row_count:
        return f"{rows} rows, catalog records {g.row_count}"
    return None


def compact(store, run_id=None, table=None, min_segments=2, target_bytes=256 << 20,
            large_bytes=1 << 20):
    """Merges each (run, table)'s small segments into files of about `target_bytes`.

    Segments of `large_bytes` or more are left as they are: rewriting them gains little (a
    reader of a step range skips files by their steps as it skips row groups) and costs a
    run's finish. tools/bench_dump: 300 dumped steps flushed as two ~25 MB segments took 1.7 s
    to merge at finish with 64 MiB as the bar; at 2 509 tensors, 16 steps of ~4.7 MB took
    ~2.2 s of its CPU with 8 MiB as the bar (py-spy), a sixth of the whole run's. What
    compaction is for is a long run's many tiny flushes (KBs of scalars every few seconds).
    The new file is written
    and registered in the same transaction that unregisters the old ones; the old files are
    deleted only after that commit. Processes compacting one run at once (attempts finishing
    together) each merge what the others did not take: a group another process compacted
    first is left to it.
    Returns {(run, table): (segments before, segments after)}.
    """
    store.require_write("compaction")
    done = {}
    groups = {}
    for g in store.segments(run_id, table):
        groups.setdefault((g.run_id, g.table), []).append(g)
    for (rid, tname), segs in groups.items():
        small = [g for g in segs if g.size_bytes < large_bytes]
        if len(small) < min_segments:
            continue
        merges, current, size = [], [], 0
        for g in small:
            current.append(g)
            size += g.size_bytes
            if size >= target_bytes:
                merges.append(current)
                current, size = [], 0
        if current:
            merges.append(current)
        merges = [m for m in merges if len(m) > 1]
        if not merges:
            continue
        merged = [group for group in merges if _merge(store, rid, tname, group)]
        if merged:
            done[(rid, tname)] = (len(segs), len(segs) - sum(len(m) - 1 for m in merged))
    return done


class _Raced(Exception):
    """Another process compacted (some of) these segments first."""


def _merge(store, run_id, table_name, olds):
    def batches():   # one old segment's row group at a time: memory stays flat
        for g in olds:
            yield from store.data.parquet_file(g.path).iter_batches(
                batch_size=segments.ROW_GROUP_ROWS)

    rel = f"{segments.segment_dir(table_name, run_id)}/{segments.file_name('c')}"
    try:
        rows, size, digest, lo, hi = segments.write_streamed(store.data, rel, table_name,
                                                             batches())
    except Exception:
        if _all_registered(store, olds):
            raise
        return False   # another compaction took (and deleted) some of them: its job now

    def swap(s):   # no file I/O in here: the new file is written, the old go after the commit
        if s.info.get("retry") and s.scalar(cat.select(cat.SegmentRow.segment_id).where(
                cat.SegmentRow.path == rel)) is not None:
            return   # a commit whose answer was lost
        # lock the old rows (PostgreSQL: another compaction of the same segments waits here,
        # then finds them gone; SQLite's write lock is already taken), then swap
        ids = [g.segment_id for g in olds]
        seg = cat.SegmentRow
        present = s.scalars(cat.select(seg.segment_id).where(seg.segment_id.in_(ids))
                            .with_for_update()).all()
        if len(present) != len(ids):
            raise _Raced()
        deleted = s.execute(cat.delete(seg).where(seg.segment_id.in_(ids))).rowcount
        if deleted != len(ids):
            raise _Raced()
        s.add(cat.SegmentRow(run_id=run_id, table_name=table_name, writer_id=None, path=rel,
                             row_count=rows, size_bytes=size, sha256=digest, min_step=lo,
                             max_step=hi, created_at=time.time()))
    try:
        if rows != sum(g.row_count for g in olds):
            raise StoreDamageError(
                f"compaction of {run_id}/{table_name} read {rows} rows from its segments, the "
                f"catalog records {sum(g.row_count for g in olds)}; nothing was changed")
        store.catalog.transact(swap)
    except _Raced:
        store.data.remove(rel)
        return False
    except BaseException:
        store.data.remove(rel)
        raise
    for g in olds:
        store.data.remove(g.path)
    return True


def _all_registered(store, olds):
    ids = {g.segment_id for g in olds}
    return store.catalog.read(lambda s: set(s.scalars(cat.select(cat.SegmentRow.segment_id).where(
        cat.SegmentRow.segment_id.in_(ids)))) == ids)
