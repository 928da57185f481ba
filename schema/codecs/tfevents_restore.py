"""tfevents files back from a store, byte for byte (no TensorFlow).

The `tfevents_records` table keeps every record of every event file; payloads that a decoded
row holds verbatim were left out of the record (`cuts`) and are put back from that row here.
`payloads` is the one definition of a decoded row's payload bytes, used by the capture to
find them in a record and by the restore to put them back. Every restored record is checked
against the crc the file itself carried.
"""

import collections
import itertools
import os

import numpy as np

from ..errors import BlackboxError, StoreDamageError
from ..formats import tfevents, tfrecord

RAW_TABLE = "tfevents_records"
MAX_TRIES = 64   # candidate combinations tried for one record whose decoded rows are ambiguous


def payloads(table, row):
    """The payload byte strings of one decoded row, in `part` order (`row`: a dict)."""
    if table == "media":
        return [row["data"]]
    if table == "tensors":
        return [row["tensor"]]
    if table == "histograms":
        limits = np.asarray(row["bucket_limits"], "<f8")
        counts = np.asarray(row["bucket_counts"], "<f8")
        if row.get("source") == "tensor":   # the plugin's [k, 3] tensor: left, right, count
            lefts = np.asarray(row["bucket_lefts"], "<f8")
            return [np.column_stack([lefts, limits, counts]).tobytes()]
        return [limits.tobytes(), counts.tobytes()]   # HistogramProto's packed arrays
    return []


def _key(table, row):
    return (table, row["attempt"], row["tag"], row["step"], row["wall_time"],
            (row.get("index") or 0) if table == "media" else 0)


def cut_key(rec, c):
    """The key of the decoded row that holds cut `c` of raw row `rec`."""
    return (c["table"], rec["attempt"], c["tag"], rec["step"], rec["wall_time"],
            c["index"] if c["table"] == "media" else 0)


_KEYS = ["step", "wall_time", "tag", "attempt"]
_COLUMNS = {"media": _KEYS + ["index", "data"], "tensors": _KEYS + ["tensor"],
            "histograms": _KEYS + ["bucket_limits", "bucket_counts", "bucket_lefts", "source"]}


def _wanted(rows):
    wanted = collections.defaultdict(set)
    for rec in rows:
        for c in rec["cuts"] or ():
            wanted[c["table"]].add(cut_key(rec, c))
    return wanted


def decoded_payloads(store, run_id, rows, keys_only=False, steps=None):
    """{key: [payload lists]} of the decoded rows that `rows` (raw rows) were cut against;
    with keys_only, {key: []} (which of them are in the store) without reading payloads.
    `steps=(lo, hi)` reads only those steps of the decoded tables (the rows' steps)."""
    found = collections.defaultdict(list)
    for table, keys in sorted(_wanted(rows).items()):
        columns = _COLUMNS[table][:4 + (table == "media")] if keys_only else _COLUMNS[table]
        t = store.read(run_id, table, columns=columns, latest_only=False, steps=steps)
        for row in t.to_pylist():
            key = _key(table, row)
            if key in keys:
                found[key].append([] if keys_only else payloads(table, row))
    return found


def restore_record(rec, found):
    """The original bytes of one raw row (a dict), or None when a decoded row holding one of
    its payloads is missing (the rows of a flush that a kill -9 cut short)."""
    if not rec["cuts"]:
        return rec["record"]
    options = [[p[c["part"]] for p in found.get(cut_key(rec, c), ()) if c["part"] < len(p)]
               for c in rec["cuts"]]
    if not all(options):
        return None
    for combo in itertools.islice(itertools.product(*options), MAX_TRIES):
        data = tfevents.restore(rec["record"], [(c["at"], p) for c, p in zip(rec["cuts"], combo)])
        if len(data) == rec["length"] and tfrecord.masked_crc(data) == rec["crc"]:
            return data
    raise StoreDamageError(
        f"record {rec['index']} of {rec['file']} (step {rec['step']}): no decoded row restores "
        f"it to the bytes whose crc the file carried")


def _latest(rows):
    """One raw row per (file, offset), the latest attempt's, in file order."""
    latest = {}
    for rec in rows:
        key = (rec["file"], rec["offset"])
        if key not in latest or rec["attempt"] >= latest[key]["attempt"]:
            latest[key] = rec
    return [latest[k] for k in sorted(latest)]


def restore_files(store, run_id, problems=None):
    """{file: [(what, bytes)]} of a run's event files in record order: "record"s to frame,
    "unframed" bytes to write as they are. A file ends before its first record that cannot be
    restored (its payload's decoded row was lost to a kill -9); each such file is named in
    `problems` (a list to append to) if given."""
    rows = store.read(run_id, RAW_TABLE, latest_only=False).to_pylist()
    found = decoded_payloads(store, run_id, rows)
    files, stopped = collections.defaultdict(list), set()
    for rec in _latest(rows):
        name = rec["file"]
        if name in stopped:
            continue
        if rec["what"] == "unframed":
            files[name].append(("unframed", rec["record"]))
            continue
        data = restore_record(rec, found)
        if data is None:
            stopped.add(name)
            if problems is not None:
                problems.append(f"{name}: ends before record {rec['index']} (byte offset "
                                f"{rec['offset']}, step {rec['step']}): a decoded row holding "
                                f"its payload is not in the store")
            continue
        files[name].append(("record", data))
    return dict(files)


def read_points(store, run_id):
    """{source path: (offset, index)} to go on reading each recorded file from: after its last
    record, or at its first record whose payload rows are missing (read it again)."""
    rows = store.read(run_id, RAW_TABLE, columns=["file", "source", "offset", "index", "length",
                                                  "what", "attempt", "step", "wall_time",
                                                  "cuts"], latest_only=False).to_pylist()
    found = decoded_payloads(store, run_id, rows, keys_only=True)
    points, stopped = {}, set()
    for rec in _latest(rows):
        if rec["what"] == "unframed" or rec["source"] in stopped:
            continue
        if any(cut_key(rec, c) not in found for c in rec["cuts"] or ()):
            stopped.add(rec["source"])
            continue
        points[rec["source"]] = (rec["offset"] + tfrecord.HEADER + rec["length"] +
                                 tfrecord.FOOTER, rec["index"] + 1)
    return points


def write_logdir(store, run_id, out_dir, problems=None):
    """Writes a run's event files under out_dir (their recorded relative paths); returns the
    paths written. Refuses a file name that would leave out_dir."""
    written = []
    root = os.path.abspath(out_dir)
    for name, items in restore_files(store, run_id, problems).items():
        path = os.path.abspath(os.path.join(root, name))
        if not path.startswith(root + os.sep) or "\0" in name:
            raise BlackboxError(f"recorded tfevents file name {name!r} would leave {out_dir}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            for what, data in items:
                f.write(tfrecord.frame(data) if what == "record" else data)
        written.append(path)
    return written
