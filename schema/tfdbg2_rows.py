"""tfdbg v2 records -> `tfdbg2_records` and `tfdbg2_blobs` rows (schema/tfdbg2_tables.py).

The recorder's writer thread (recorder/tf2/debug_v2_tail.py) and `import-dumps` build their
rows here, so both make the very same rows. A source file's lines go to `tfdbg2_blobs` once
per sha256 across the whole store: `BlobIndex` knows the hashes every run's segments hold
(read once) plus those added since; the record keeps the bytes around them.
"""

import hashlib

import numpy as np
import pyarrow as pa

from .formats import tfdbg_v2, tfrecord
from .errors import WireFormatError
from .rows import binary_array
from .tfdbg2_tables import BLOBS_TABLE, TFDBG2_BLOBS, TFDBG2_RECORDS

MIN_BLOB = 256     # shorter lines stay in the record (a blob row costs about that much)
_DECODED = ("tfdbg_run_id", "op_type", "op_name", "graph_id", "output_slot",
            "tensor_debug_mode", "nonfinite")


class BlobIndex:
    """The sha256 of every source-file blob in the store, read on first use, plus the ones
    added through this index since (in buffers that may not be written yet)."""

    def __init__(self, store):
        self.store = store
        self._known = None

    def _load(self):
        known = set()
        for run_id in sorted({g.run_id for g in self.store.segments(None, BLOBS_TABLE)}):
            t = self.store.read(run_id, BLOBS_TABLE, columns=["sha256"], latest_only=False)
            known.update(t["sha256"].to_pylist())
        return known

    def __contains__(self, sha):
        if self._known is None:
            self._known = self._load()
        return sha in self._known

    def add(self, sha):
        if self._known is None:
            self._known = self._load()
        self._known.add(sha)


class FileSource:
    """One DebugEvent file being recorded: its parsed name and the session (tfdbg run id)
    it belongs to."""

    def __init__(self, name, session):
        parsed = tfdbg_v2.parse_name(name)
        if parsed is None:
            raise WireFormatError(f"{name!r} is not a tfdbg v2 file name "
                                  f"(tfdbg_events.<seconds>.<host>.<kind>)")
        self.name, self.host, self.kind = name, parsed.host, parsed.kind
        self.session = session


def _columns():
    return {f.name: [] for f in TFDBG2_RECORDS if f.name != "attempt"}


def _row(cols, src, index, offset, what, length, record, wall_time=0.0):
    cols["step"].append(index)
    cols["wall_time"].append(wall_time)
    cols["tag"].append(src.kind)
    cols["session"].append(src.session)
    cols["host"].append(src.host)
    cols["file"].append(src.name)
    cols["kind"].append(src.kind)
    cols["index"].append(index)
    cols["offset"].append(offset)
    cols["what"].append(what)
    cols["length"].append(length)
    cols["record"].append(record)


def _pad(cols):
    """Nulls for the columns a row did not set."""
    n = len(cols["step"])
    for values in cols.values():
        if len(values) < n:
            values.append(None)


def record_rows(src, records, blobs):
    """(tfdbg2_records table, tfdbg2_blobs table or None) of `records` [(offset, index,
    data)] of file `src`; new source-file blobs are added to `blobs` (a BlobIndex)."""
    cols = _columns()
    new_blobs = {}
    for offset, index, data in records:
        try:
            ev = tfdbg_v2.parse_event(data)
        except WireFormatError:
            _row(cols, src, index, offset, "unparsed", len(data), bytes(data))
            _pad(cols)
            continue
        record, cut = bytes(data), None
        if ev.lines is not None and ev.lines[1] - ev.lines[0] >= MIN_BLOB:
            a, b = ev.lines
            lines = record[a:b]
            sha = hashlib.sha256(lines).hexdigest()
            if sha not in blobs and sha not in new_blobs:
                new_blobs[sha] = (lines, ev)
            record, cut = record[:a] + record[b:], (sha, a)
        _row(cols, src, index, offset, ev.what or "", len(data), record, ev.wall_time)
        if cut is not None:
            cols["crc"].append(tfrecord.masked_crc(data))
            cols["blob"].append(cut[0])
            cols["blob_at"].append(cut[1])
        for name in _DECODED:
            cols[name].append(getattr(ev, name))
        cols["debug_values"].append(ev.values)
        cols["source_path"].append(ev.file_path)
        _pad(cols)
    for sha in new_blobs:
        blobs.add(sha)
    return _table(cols), _blob_table(new_blobs)


def file_row(src):
    """The "file" row that makes a file exist in a rebuild even if TF never wrote to it."""
    cols = _columns()
    _row(cols, src, -1, 0, "file", 0, None)
    _pad(cols)
    return _table(cols)


def unframed_row(src, offset, index, data):
    """Bytes after a file's last complete record (damaged, or a record never finished):
    kept as they are so the file comes back whole."""
    cols = _columns()
    _row(cols, src, index, offset, "unframed", len(data), bytes(data))
    _pad(cols)
    return _table(cols)


def _table(cols):
    arrays = []
    for f in TFDBG2_RECORDS:
        if f.name == "attempt":
            continue
        values = cols[f.name]
        if f.name == "record" and values and all(v is not None for v in values):
            arrays.append(binary_array(values))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, names=[f.name for f in TFDBG2_RECORDS
                                               if f.name != "attempt"])


def _blob_table(new_blobs):
    if not new_blobs:
        return None
    shas = list(new_blobs)
    datas = [new_blobs[s][0] for s in shas]
    n = len(shas)
    return pa.Table.from_arrays([
        pa.array(np.zeros(n, np.int64)),
        pa.array([new_blobs[s][1].wall_time for s in shas], pa.float64()),
        pa.array([new_blobs[s][1].file_path or "" for s in shas], pa.string()),
        pa.array(shas, pa.string()), pa.array([len(d) for d in datas], pa.int64()),
        binary_array(datas)], names=[f.name for f in TFDBG2_BLOBS if f.name != "attempt"])


def add_rows(buffers, src, records, blobs):
    """Adds the rows of `records` of file `src` to a writer's ColumnBuffers (the blobs are
    registered as a segment of their own table, possibly after the records' segment: a kill
    between the two leaves a record whose blob is missing, which the rebuild reports and
    stops that file before). Returns the rows added."""
    table, blob_table = record_rows(src, records, blobs)
    if blob_table is not None:
        buffers.add_table(BLOBS_TABLE, blob_table)
    buffers.add_table("tfdbg2_records", table)
    return table.num_rows
