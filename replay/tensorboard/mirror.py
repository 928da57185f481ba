"""Captured event files (the TF2 capture, import-tfevents) written back byte for byte into a
run's directory, incrementally.

A file's content is fixed by the store (records are never rewritten), so what a replay
writes after the bytes it committed before is always the file's next bytes: the cursor keeps,
per file, how many bytes are committed (complete records). A new file is written whole under
a name TensorBoard does not read (no "tfevents" in it) and renamed into place; a file that
gained records gets them appended. A replay killed mid-append leaves a tail that is a prefix
of the file's true next bytes -- a reader sees complete records it would have read anyway,
or a partial last record it waits on, as on a live writer's file -- and the next replay checks
that tail against the true bytes and appends only what is missing. Bytes kept unframed (a
damaged record, a half-written tail) are written but never committed: the next replay writes
whatever supersedes them.
"""

import collections
import os
import uuid

from tfblackbox.schema.errors import StoreDamageError
from tfblackbox.schema.formats import tfrecord
from tfblackbox.schema.formats.files import fsync_path
from tfblackbox.schema.kill_points import kill_point
from tfblackbox.schema.codecs.tfevents_restore import (RAW_TABLE, _latest, decoded_payloads,
                                                 restore_record)

TEMP_PREFIX = ".tfblackbox-"
TEMP_SUFFIX = ".tmp"


def temp_path(folder):
    return os.path.join(folder, f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


def clear_temps(root):
    """Removes what a killed replay left under root (the caller holds the logdir's lock)."""
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                os.remove(os.path.join(folder, name))


def raw_rows(store, run_id):
    """{file: [raw rows in offset order]} (the latest attempt's row of each offset)."""
    rows = store.read(run_id, RAW_TABLE, latest_only=False).to_pylist()
    files = collections.defaultdict(list)
    for rec in _latest(rows):
        files[rec["file"]].append(rec)
    return files


def summary_keys(files):
    """{(attempt, step, wall_time): {namespaces}} of the captured summary records: the decoded
    rows these account for are in the files already."""
    keys = collections.defaultdict(set)
    for name, recs in files.items():
        ns = os.path.dirname(name)
        for rec in recs:
            if rec["what"] == "summary":
                keys[rec["attempt"], rec["step"], rec["wall_time"]].add(ns)
    return keys


def mirror_file(store, run_id, run_dir, name, recs, committed, problems):
    """Brings `run_dir/name` up to the store's records; returns (new committed bytes, bytes
    written)."""
    path = os.path.abspath(os.path.join(run_dir, name))
    if not path.startswith(os.path.abspath(run_dir) + os.sep) or "\0" in name:
        raise StoreDamageError(f"recorded tfevents file name {name!r} would leave {run_dir}")
    size = os.path.getsize(path) if os.path.isfile(path) else None
    if committed and (size is None or size < committed):
        problems.append(f"{path} is gone or shorter than the {committed} bytes written to it "
                        f"before; written again whole")
        committed = 0
    new = [r for r in recs if r["offset"] >= committed]
    data, end = _restore(store, run_id, name, new, committed, problems)
    if size is None or (committed == 0 and size is not None and not _is_prefix(path, 0, data)):
        if not data:
            return committed, 0
        _write_new(path, data)
        return end, len(data)
    return end, _append(path, committed, size, data, problems)


def _restore(store, run_id, name, recs, committed, problems):
    """The file's bytes from `committed` on, and where its complete records end."""
    if not recs:
        return b"", committed
    steps = (min(r["step"] for r in recs), max(r["step"] for r in recs) + 1)
    found = decoded_payloads(store, run_id, recs, steps=steps)
    parts, pos = [], committed
    for rec in recs:
        if rec["offset"] != pos:
            problems.append(f"{name}: the store has no record at byte offset {pos} (next: "
                            f"{rec['offset']}); the file is written up to there")
            break
        if rec["what"] == "unframed":
            parts.append(rec["record"])   # never committed: a later replay may supersede it
            break
        data = restore_record(rec, found)
        if data is None:   # its payload's rows are not registered yet (a live recording)
            break
        framed = tfrecord.frame(data)
        parts.append(framed)
        pos += len(framed)
    return b"".join(parts), pos


def _is_prefix(path, start, data):
    with open(path, "rb") as f:
        f.seek(start)
        tail = f.read(len(data) + 1)
    return data.startswith(tail)


def _write_new(path, data):
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = temp_path(folder)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(folder)


def _append(path, committed, size, data, problems):
    """Appends what the file lacks of `data` (its bytes from `committed` on)."""
    with open(path, "r+b") as f:
        f.seek(committed)
        tail = f.read(size - committed)
        if not data.startswith(tail):
            problems.append(f"{path}: the {len(tail)} bytes after its committed {committed} "
                            f"are not the store's; replaced")
            f.truncate(committed)
            tail = b""
        rest = data[len(tail):]
        if rest:
            f.seek(committed + len(tail))
            if os.environ.get("TFBLACKBOX_TEST_KILL_AT") == "append":   # half, then killed
                f.write(rest[:len(rest) // 2])
                f.flush()
                kill_point("append")
            f.write(rest)
            f.flush()
            os.fsync(f.fileno())
    return len(rest)
