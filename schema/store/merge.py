"""Merging stores: the runs of several stores (carried from air-gapped hosts) into one.

Runs, attempts (writers), segments, replay cursors, black-box triggers (a trigger is known by
its attempt, kind, step, time and reason) and the counts of rows an attempt lost (by attempt,
table and reason; the larger count wins) are copied. A run id names the same run
in two stores when its start time and host agree, an attempt when its start time, host and pid
agree; anything else under one id is a conflict, refused before anything is written.

A segment is known by the sha256 of its bytes. Every segment the destination takes is noted
in the same transaction that registers it (a cursor row `merge-source:<sha256>` of its run),
so merging again adds nothing, also after either store compacted, and a merge killed at any
point is finished by running it again (a file copied but not registered is an orphan that
`verify` removes). A source segment the destination does not know, whose steps overlap rows
the destination has of the same attempt (a source compacted since the last merge), is copied
without the rows the destination already holds.

Artifact versions are known by their token: a version the destination lacks is copied blobs
first (a blob it has is not copied again), then registered in one transaction.
"""

import collections
import hashlib
import json
import time

import pyarrow as pa

from . import catalog as cat
from . import segments
from . import artifacts as art
from . import chunks as chunking
from ..errors import BlackboxError, MergeConflictError, StoreDamageError
from ..kill_points import kill_point
from .records import trigger_record

MERGE_CURSOR = "merge-source:"
COPY_BLOCK = 8 << 20
_copied = [0]


def _kill_point():
    """Tests stop a merge after the n-th file is copied, before it is registered."""
    _copied[0] += 1
    kill_point(f"merge-copied:{_copied[0]}")


def merge(sources, dest):
    """Merges every run of each Store in `sources` into Store `dest`; returns one report dict
    per source. Raises MergeConflictError (nothing written) for clashing run ids. The
    sources are only read (Store.open's default access will do)."""
    dest.require_write("merging into it")
    for src in sources:
        if src.root == dest.root or src.data == dest.data:
            raise BlackboxError(f"cannot merge store {src.root} into itself")
    _check(sources, dest)
    reports = []
    for src in sources:
        rep = collections.Counter()
        for record in src.runs():
            _merge_run(src, dest, record, rep)
        reports.append({"source": src.root, **{k: rep[k] for k in (
            "runs_added", "runs_present", "attempts_added", "segments_copied",
            "segments_skipped", "rows_copied", "bytes_copied", "cursors_copied",
            "triggers_copied", "losses_copied", "artifact_versions_copied",
            "artifact_bytes_copied")}})
    return reports


# -- conflicts ----------------------------------------------------------------------------------

def _check(sources, dest):
    known = {}   # run id -> (store root, RunRecord, {attempt: WriterRecord})
    for store in [dest, *sources]:
        for record in store.runs():
            writers = {w.attempt: w for w in store.writers(record.run_id)}
            if record.run_id not in known:
                known[record.run_id] = (store.root, record, writers)
                continue
            where, other, other_writers = known[record.run_id]
            if (other.started_at, other.host) != (record.started_at, record.host):
                raise MergeConflictError(
                    f"run id {record.run_id!r} names two different runs: in {where} one "
                    f"started {_when(other.started_at)} on host {other.host}, in {store.root} "
                    f"one started {_when(record.started_at)} on host {record.host}; nothing was "
                    f"merged (merge such stores into different destinations)")
            for attempt, w in writers.items():
                o = other_writers.setdefault(attempt, w)
                if (o.started_at, o.host, o.pid) != (w.started_at, w.host, w.pid):
                    raise MergeConflictError(
                        f"run {record.run_id!r}: attempt {attempt} is a different process in "
                        f"{where} (host {o.host}, pid {o.pid}, started {_when(o.started_at)}) "
                        f"than in {store.root} (host {w.host}, pid {w.pid}, started "
                        f"{_when(w.started_at)}); both stores recorded into copies of this run; "
                        f"nothing was merged")


def _when(ts):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "?"


# -- one run ------------------------------------------------------------------------------------

RUN_COPIED = ("project", "name", "group", "notes", "status", "exit_code", "host", "pid",
              "command", "python_version", "tf_version", "tfblackbox_version", "git_commit",
              "started_at", "ended_at", "heartbeat_at")
STATUS_FIELDS = ("status", "exit_code", "ended_at", "heartbeat_at")


def _merge_run(src, dest, record, rep):
    def put_run(s):
        row = s.get(cat.RunRow, record.run_id)
        if row is None:
            s.add(cat.RunRow(run_id=record.run_id, config_json=cat.dumps(record.config),
                             tags_json=json.dumps(record.tags),
                             **{k: getattr(record, k) for k in RUN_COPIED}))
            return True
        if (record.heartbeat_at or 0) > (row.heartbeat_at or 0):   # the source saw more
            for k in STATUS_FIELDS:
                setattr(row, k, getattr(record, k))
        row.tf_version = row.tf_version or record.tf_version
        return False
    rep["runs_added" if dest.catalog.transact(put_run) else "runs_present"] += 1
    writer_ids = _merge_writers(src, dest, record.run_id, rep)
    taken = _taken(dest, record.run_id)
    for g in src.segments(record.run_id):
        if g.sha256 in taken:
            rep["segments_skipped"] += 1
            continue
        _copy_segment(src, dest, g, writer_ids.get(g.writer_id), rep)
        taken.add(g.sha256)
    _merge_cursors(src, dest, record.run_id, rep)
    _merge_triggers(src, dest, record.run_id, writer_ids, rep)
    _merge_losses(src, dest, record.run_id, writer_ids, rep)
    _merge_artifacts(src, dest, record.run_id, writer_ids, rep)


def _merge_writers(src, dest, run_id, rep):
    """Adds the source's attempts the destination lacks; {source writer id: dest writer id}."""
    theirs = src.writers(run_id)

    def put(s):
        ids, added = {}, 0
        for w in theirs:
            row = s.scalar(cat.select(cat.WriterRow).where(cat.WriterRow.run_id == run_id,
                                                           cat.WriterRow.attempt == w.attempt))
            if row is None:
                row = cat.WriterRow(run_id=run_id, attempt=w.attempt, host=w.host, pid=w.pid,
                                    started_at=w.started_at, ended_at=w.ended_at,
                                    first_step=w.first_step, dropped_rows=w.dropped_rows,
                                    error=w.error)
                s.add(row)
                s.flush()
                added += 1
            else:
                row.ended_at = row.ended_at or w.ended_at
                row.dropped_rows = max(row.dropped_rows or 0, w.dropped_rows or 0)
                row.error = row.error or w.error
                if w.first_step is not None and (row.first_step is None or
                                                 w.first_step < row.first_step):
                    row.first_step = w.first_step
            ids[w.writer_id] = row.writer_id
        return ids, added
    ids, added = dest.catalog.transact(put)
    rep["attempts_added"] += added
    return ids


def _taken(dest, run_id):
    """sha256 of every segment the destination holds or took from a merge, for one run."""
    def read(s):
        marks = s.scalars(cat.select(cat.CursorRow.destination).where(
            cat.CursorRow.run_id == run_id, cat.CursorRow.destination.startswith(MERGE_CURSOR)))
        own = s.scalars(cat.select(cat.SegmentRow.sha256).where(cat.SegmentRow.run_id == run_id))
        return {m[len(MERGE_CURSOR):] for m in marks} | set(own)
    return dest.catalog.read(read)


def _copy_segment(src, dest, g, writer_id, rep):
    rel = f"{segments.segment_dir(g.table, g.run_id)}/{segments.file_name('g')}"
    noted = _provenance(src, g, rel)
    if _overlaps(dest, g, writer_id):
        table = _rows_not_in(dest, src, g)
        if table.num_rows == 0:   # all there already (a source compacted since)
            dest.catalog.transact(lambda s: noted(s, None))
            rep["segments_skipped"] += 1
            return
        table, blob = segments.encode(table, g.table)
        dest.data.write_new(rel, blob)
        size, digest, rows = len(blob), hashlib.sha256(blob).hexdigest(), table.num_rows
        lo, hi = segments.step_range(table)
    else:   # the bytes as they are, streamed, checked against the source's catalog
        _copy_file(src, dest, g, rel)
        size, digest, rows, lo, hi = g.size_bytes, g.sha256, g.row_count, g.min_step, g.max_step
    _kill_point()
    try:
        segments.register(dest.catalog, g.run_id, g.table, writer_id, rel, rows, size, digest,
                          lo, hi, also=noted, heartbeat=False)
    except BaseException:
        dest.data.remove(rel)
        raise
    rep["segments_copied"] += 1
    rep["rows_copied"] += rows
    rep["bytes_copied"] += size


def _copy_file(src, dest, g, rel):
    damaged = (f"segment {src.data.show(g.path)} of store {src.root} {{}}; run `tfblackbox "
               f"verify --store {src.root}`; nothing of it was merged")
    try:
        source = src.data.open_input(g.path)
    except FileNotFoundError as e:
        raise StoreDamageError(damaged.format("is missing")) from e
    with source as f, dest.data.new_file(rel) as sink:
        for block in iter(lambda: f.read(COPY_BLOCK), b""):
            sink.write(block)
        if (sink.size, sink.sha256()) != (g.size_bytes, g.sha256):
            raise StoreDamageError(damaged.format(
                f"differs from its catalog record ({sink.size} bytes, sha256 "
                f"{sink.sha256()[:12]}…)"))


def _provenance(src, g, rel):
    def note(s, _row):
        s.add(cat.CursorRow(run_id=g.run_id, destination=MERGE_CURSOR + g.sha256, step=None,
                            state_json=cat.dumps({"table": g.table, "from": src.root,
                                                  "path": rel}),
                            updated_at=time.time()))
    return note


def _overlaps(dest, g, writer_id):
    """Whether the destination may hold some of g's rows already: a segment of the same run,
    table and attempt (or of unknown attempt: compacted) over overlapping steps."""
    if g.min_step is None:
        return False
    for d in dest.segments(g.run_id, g.table):
        same_writer = d.writer_id is None or writer_id is None or d.writer_id == writer_id
        if same_writer and d.min_step is not None and d.min_step <= g.max_step and (
                d.max_step >= g.min_step):
            return True
    return False


def _rows_not_in(dest, src, g):
    """g's rows less those the destination holds (as a multiset: a row recorded twice in the
    source and once in the destination is copied once)."""
    from ..tables import schema_of
    theirs = segments.read_back(src.data.parquet_file(g.path).read().cast(schema_of(g.table)),
                                g.table)
    ours = dest.read(g.run_id, g.table, latest_only=False, steps=(g.min_step, g.max_step + 1))
    have = collections.Counter(_row_keys(ours))
    keep = []
    for i, key in enumerate(_row_keys(theirs)):
        if have[key] > 0:
            have[key] -= 1
        else:
            keep.append(i)
    return theirs.take(pa.array(keep, pa.int64()))   # typed: an empty list is null-typed


def _row_keys(table):
    return [hashlib.sha1(repr(tuple(r.values())).encode()).digest() for r in table.to_pylist()]


def _merge_cursors(src, dest, run_id, rep):
    """Replay cursors: the one that got further wins; merge notes are a union."""
    def read(s):
        return [(c.destination, c.step, c.state_json, c.updated_at) for c in s.scalars(
            cat.select(cat.CursorRow).where(cat.CursorRow.run_id == run_id))]
    theirs = src.catalog.read(read)

    def put(s):
        copied = 0
        for destination, step, state, updated in theirs:
            row = s.get(cat.CursorRow, (run_id, destination))
            if row is None:
                s.add(cat.CursorRow(run_id=run_id, destination=destination, step=step,
                                    state_json=state, updated_at=updated))
                copied += 1
            elif not destination.startswith(MERGE_CURSOR) and (
                    -1 if step is None else step) > (-1 if row.step is None else row.step):
                row.step, row.state_json, row.updated_at = step, state, updated
                copied += 1
        return copied
    rep["cursors_copied"] += dest.catalog.transact(put)


def _merge_triggers(src, dest, run_id, writer_ids, rep):
    """Black-box triggers the destination lacks, their attempts' writer ids mapped to its own."""
    theirs = src.triggers(run_id)

    def key(t, writer_id):
        return (writer_id, t.kind, t.step, t.fired_at, t.reason)

    def put(s):
        have = {key(t, t.writer_id) for t in map(trigger_record, s.scalars(
            cat.select(cat.TriggerRow).where(cat.TriggerRow.run_id == run_id)))}
        copied = 0
        for t in theirs:
            writer_id = writer_ids.get(t.writer_id)
            if key(t, writer_id) in have:
                continue
            s.add(cat.TriggerRow(run_id=run_id, writer_id=writer_id, step=t.step, kind=t.kind,
                                 reason=t.reason, fired_at=t.fired_at, first_step=t.first_step,
                                 last_step=t.last_step, steps_written=t.steps_written))
            have.add(key(t, writer_id))
            copied += 1
        return copied
    if theirs:
        rep["triggers_copied"] += dest.catalog.transact(put)


def _merge_losses(src, dest, run_id, writer_ids, rep):
    """The source's counts of lost rows, per attempt (mapped to the destination's writer id),
    table and reason; where both stores have one, the larger totals."""
    theirs = {}
    for x in src.losses(run_id):
        if writer_ids.get(x.writer_id) is not None:
            theirs.setdefault(writer_ids[x.writer_id], {})[(x.table, x.reason)] = (
                x.rows, x.bytes, x.first_step, x.last_step)
    have = {(x.writer_id, x.table, x.reason): x for x in dest.losses(run_id)}
    for writer_id, totals in theirs.items():
        known = {k: have.get((writer_id, *k)) for k in totals}
        new = {k: v for k, v in totals.items()
               if known[k] is None or v[:2] > (known[k].rows, known[k].bytes)}
        if new:
            dest.note_losses(run_id, writer_id, new)
            rep["losses_copied"] += len(new)


def _merge_artifacts(src, dest, run_id, writer_ids, rep):
    """The source's artifact versions the destination lacks (a version is known by its
    token), blobs first (a blob the destination has is not copied), then each version
    registered in one transaction; its number kept where the destination has it free."""
    have = {a.token for a in dest.artifacts(run_id)}
    for a in src.artifacts(run_id):
        if a.token in have:
            continue
        stored = art.stored_shas(dest.catalog, [f.sha256 for f in a.files])
        listed = chunking.chunk_lists(src.catalog, [f.sha256 for f in a.files])
        chunks = {}
        for f in a.files:
            if f.sha256 in stored:
                continue
            if f.sha256 in listed:   # a chunked file: the chunks the destination lacks
                chunks[f.sha256] = listed[f.sha256]
                known = chunking.known_chunks(dest.catalog, [c for c, _n in listed[f.sha256]])
                for csha, n in listed[f.sha256]:
                    if csha not in known:
                        _copy_blob(src, dest, csha, src.data.open_input(art.blob_rel(csha)))
                        known.add(csha)
                        rep["artifact_bytes_copied"] += n
            else:
                _copy_blob(src, dest, f.sha256, src.open_artifact_file(f.sha256))
                rep["artifact_bytes_copied"] += f.size
            stored.add(f.sha256)
        taken = {x.version for x in dest.artifacts(run_id, a.name)}
        art.register(dest, run_id, a.name, a.type, a.files, a.aliases, a.metadata, a.step,
                     a.wall_time, writer_ids.get(a.writer_id), a.token,
                     None if a.version in taken else a.version, chunks=chunks)
        rep["artifact_versions_copied"] += 1


def _copy_blob(src, dest, sha, stream):
    """One blob (a whole file or a chunk) from the source's stream into the destination,
    durably, its bytes checked against its name."""
    rel = art.blob_rel(sha)
    with stream as i, dest.data.new_file(rel) as out:
        while block := i.read(COPY_BLOCK):
            out.write(block)
    if out.sha256() != sha:
        dest.data.remove(rel)
        raise StoreDamageError(f"store {src.root}: artifact blob {src.data.show(rel)} does "
                               f"not hold the bytes its name says; run `tfblackbox verify "
                               f"--store {src.root}`")
