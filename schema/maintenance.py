"""verify, orphan clean-up and compaction of a store."""

import dataclasses
import hashlib
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq

from . import catalog as cat
from . import segments
from .errors import StoreDamageError
from .formats.files import pid_alive as _pid_alive

ORPHAN_GRACE_SECS = 3600.0   # an unregistered file this old is an orphan even if its owner lives


@dataclasses.dataclass
class VerifyReport:
    checked: int = 0
    damaged: list = dataclasses.field(default_factory=list)     # (path, reason)
    orphans_removed: list = dataclasses.field(default_factory=list)
    in_flight: list = dataclasses.field(default_factory=list)   # unregistered, owner alive

    @property
    def ok(self):
        return not self.damaged

    def to_dict(self):
        return dataclasses.asdict(self) | {"ok": self.ok}



def _unregistered_files(store):
    registered = {g.path for g in store.segments()}
    data = os.path.join(store.root, "data")
    for folder, _dirs, files in os.walk(data):
        for name in files:
            full = os.path.join(folder, name)
            rel = os.path.relpath(full, store.root).replace(os.sep, "/")
            if rel not in registered:
                yield full, name


def remove_orphans(store, grace_secs=ORPHAN_GRACE_SECS, dry_run=False):
    """Removes unregistered files whose writer is gone (or that are older than the grace).

    A file between rename and registration belongs to a live writer and is left alone.
    Returns (removed, in_flight) lists of paths.
    """
    removed, in_flight = [], []
    now = time.time()
    for full, name in _unregistered_files(store):
        owner = segments.parse_owner(name)
        dead_owner = owner is not None and segments.is_this_host(owner[0]) and not _pid_alive(owner[1])
        try:
            old = now - os.path.getmtime(full) > grace_secs
        except OSError:
            continue
        if dead_owner or old:
            if not dry_run:
                try:
                    os.remove(full)
                except FileNotFoundError:
                    continue
            removed.append(full)
        else:
            in_flight.append(full)
    return removed, in_flight


def verify(store, fix=True, grace_secs=ORPHAN_GRACE_SECS):
    """Checks every registered segment (exists, size, sha256, row count) and cleans orphans."""
    report = VerifyReport()
    for g in store.segments():
        report.checked += 1
        full = os.path.join(store.root, g.path)
        reason = _check_segment(full, g)
        if reason:
            report.damaged.append((full, reason))
    report.orphans_removed, report.in_flight = remove_orphans(store, grace_secs, dry_run=not fix)
    return report


def _check_segment(full, g):
    try:
        with open(full, "rb") as f:
            data = f.read()
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
            large_bytes=8 << 20):
    """Merges each (run, table)'s small segments into files of about `target_bytes`.

    Segments of `large_bytes` or more are left as they are: rewriting them gains little and
    costs a run's finish (tools/bench_dump: 300 dumped steps flushed as two ~25 MB segments
    took 1.7 s to merge at finish; with 64 MiB as the bar they were). The new file is written
    and registered in the same transaction that unregisters the old ones; the old files are
    deleted only after that commit.
    Returns {(run, table): (segments before, segments after)}.
    """
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
        for group in merges:
            _merge(store, rid, tname, group)
        done[(rid, tname)] = (len(segs), len(segs) - sum(len(m) - 1 for m in merges))
    return done


def _merge(store, run_id, table_name, olds):
    def batches():   # one old segment's row group at a time: memory stays flat
        for g in olds:
            f = pq.ParquetFile(os.path.join(store.root, g.path))
            yield from f.iter_batches(batch_size=segments.ROW_GROUP_ROWS)

    rel = f"{segments.segment_dir(table_name, run_id)}/{segments.file_name('c')}"
    rows, size, digest, lo, hi = segments.write_streamed(store.root, rel, table_name, batches())
    try:
        if rows != sum(g.row_count for g in olds):
            raise StoreDamageError(
                f"compaction of {run_id}/{table_name} read {rows} rows from its segments, the "
                f"catalog records {sum(g.row_count for g in olds)}; nothing was changed")
        with store.catalog.write() as s:
            for g in olds:
                row = s.get(cat.SegmentRow, g.segment_id)
                if row is None:
                    raise StoreDamageError(f"segment {g.path} was unregistered by another "
                                           f"process during compaction; nothing was changed")
                s.delete(row)
            s.add(cat.SegmentRow(run_id=run_id, table_name=table_name, writer_id=None, path=rel,
                                 row_count=rows, size_bytes=size, sha256=digest, min_step=lo,
                                 max_step=hi, created_at=time.time()))
    except BaseException:
        os.remove(os.path.join(store.root, rel))
        raise
    for g in olds:
        try:
            os.remove(os.path.join(store.root, g.path))
        except FileNotFoundError:
            pass
