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

from .errors import BlackboxError, StoreDamageError
from .formats import tfevents, tfrecord

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
            row.get("index") or 0 if table == "media" else 0)


_COLUMNS = {"media": ["step", "wall_time", "tag", "attempt", "index", "data"],
            "tensors": ["step", "wall_time", "tag", "attempt", "tensor"],
            "histograms": ["step", "wall_time", "tag", "attempt", "bucket_limits",
                           "bucket_counts", "bucket_lefts", "source"]}


class _Payloads:
    """Decoded rows of the tables a run's records were cut against, looked up by key."""

    def __init__(self, store, run_id, wanted):
        self.rows = collections.defaultdict(list)
        for table in sorted(wanted):
            t = store.read(run_id, table, columns=_COLUMNS[table], latest_only=False)
            for row in t.to_pylist():
                key = _key(table, row)
                if key in wanted[table]:
                    self.rows[key].append(payloads(table, row))

    def candidates(self, rec, c):
        key = (c["table"], rec["attempt"], c["tag"], rec["step"], rec["wall_time"],
               c["index"] if c["table"] == "media" else 0)
        return [p[c["part"]] for p in self.rows.get(key, ()) if c["part"] < len(p)]


def restore_record(rec, found):
    """The original bytes of one raw row (a dict); `found` gives each cut's candidates."""
    if not rec["cuts"]:
        return rec["record"]
    options = [found.candidates(rec, c) for c in rec["cuts"]]
    missing = [c for c, o in zip(rec["cuts"], options) if not o]
    if missing:
        raise StoreDamageError(
            f"record {rec['index']} of {rec['file']}: the decoded {missing[0]['table']} row "
            f"holding its payload (tag {missing[0]['tag']!r}, step {rec['step']}) is not in the "
            f"store")
    for combo in itertools.islice(itertools.product(*options), MAX_TRIES):
        data = tfevents.restore(rec["record"], [(c["at"], p) for c, p in zip(rec["cuts"], combo)])
        if len(data) == rec["length"] and tfrecord.masked_crc(data) == rec["crc"]:
            return data
    raise StoreDamageError(
        f"record {rec['index']} of {rec['file']} (step {rec['step']}): no decoded row restores "
        f"it to the bytes whose crc the file carried")


def restore_files(store, run_id):
    """{file: [(what, bytes)]} of a run's event files in record order: "record"s to frame,
    "unframed" bytes to write as they are."""
    raw = store.read(run_id, RAW_TABLE, latest_only=False)
    rows = raw.to_pylist()
    wanted = collections.defaultdict(set)
    for rec in rows:
        for c in rec["cuts"] or ():
            wanted[c["table"]].add((c["table"], rec["attempt"], c["tag"], rec["step"],
                                    rec["wall_time"], c["index"] if c["table"] == "media" else 0))
    found = _Payloads(store, run_id, wanted)
    files = collections.defaultdict(list)
    latest = {}   # (file, offset) -> row: a record read again by a later attempt counts once
    for rec in rows:
        key = (rec["file"], rec["offset"])
        if key not in latest or rec["attempt"] >= latest[key]["attempt"]:
            latest[key] = rec
    for _key_, rec in sorted(latest.items()):
        if rec["what"] == "unframed":
            files[rec["file"]].append(("unframed", rec["record"]))
        else:
            files[rec["file"]].append(("record", restore_record(rec, found)))
    return dict(files)


def write_logdir(store, run_id, out_dir):
    """Writes a run's event files under out_dir (their recorded relative paths); returns the
    paths written. Refuses a file name that would leave out_dir."""
    written = []
    root = os.path.abspath(out_dir)
    for name, items in restore_files(store, run_id).items():
        path = os.path.abspath(os.path.join(root, name))
        if not path.startswith(root + os.sep) or "\0" in name:
            raise BlackboxError(f"recorded tfevents file name {name!r} would leave {out_dir}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            for what, data in items:
                f.write(tfrecord.frame(data) if what == "record" else data)
        written.append(path)
    return written
