"""tfdbg v2 records -> `tfdbg_v2_records` and `tfdbg_v2_blobs` rows (schema/tables/tfdbg_v2.py).

The recorder's writer thread (recorder/tf2/tfdbg_v2_tail.py) and `import-dumps` build their
rows here, so both make the very same rows. A source file's lines go to `tfdbg_v2_blobs` once
per sha256 across the whole store: `BlobIndex` knows the hashes every run's segments hold
(read once) plus those added since; the record keeps the bytes around them.
"""

import hashlib

import numpy as np
import pyarrow as pa

from ..formats import tfdbg_v2, tfrecord
from ..errors import WireFormatError
from .rows import binary_array
from ..tables.tfdbg_v2 import BLOBS_TABLE, TFDBG_V2_BLOBS, TFDBG_V2_RECORDS

MIN_BLOB = 256     # shorter lines stay in the record (a blob row costs about that much)


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

    def forget(self):
        """Blobs added may not reach the store (the writer dropped them): read it again."""
        self._known = None


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


# the columns of a row, in schema order (attempt is the buffers' to add)
_NAMES = [f.name for f in TFDBG_V2_RECORDS if f.name != "attempt"]
_NULL_EVENT = tfdbg_v2.EventInfo()


def _row(src, index, offset, what, length, record, ev=_NULL_EVENT, cut=(None, None, None)):
    """One row as a tuple in _NAMES order."""
    return (index, ev.wall_time, src.kind, src.session, src.host, src.name, src.kind, index,
            offset, what, length, cut[0], record, cut[1], cut[2], ev.tfdbg_run_id, ev.op_type,
            ev.op_name, ev.graph_id, ev.output_slot, ev.tensor_debug_mode, ev.values,
            ev.nonfinite, ev.file_path)


def record_rows(src, records, blobs):
    """(tfdbg_v2_records table, tfdbg_v2_blobs table or None) of `records` [(offset, index,
    data)] of file `src`; new source-file blobs are added to `blobs` (a BlobIndex). Rows are
    tuples transposed once: per-column appends cost twice as much on the writer thread."""
    rows, new_blobs = [], {}
    for offset, index, data in records:
        try:
            ev = tfdbg_v2.parse_event(data)
        except WireFormatError:
            rows.append(_row(src, index, offset, "unparsed", len(data), bytes(data)))
            continue
        if ev.lines is not None and ev.lines[1] - ev.lines[0] >= MIN_BLOB:
            a, b = ev.lines
            lines = data[a:b]
            sha = hashlib.sha256(lines).hexdigest()
            if sha not in blobs and sha not in new_blobs:
                new_blobs[sha] = (lines, ev)
            rows.append(_row(src, index, offset, ev.what, len(data), data[:a] + data[b:], ev,
                             (tfrecord.masked_crc(data), sha, a)))
        else:
            rows.append(_row(src, index, offset, ev.what, len(data), data, ev))
    for sha in new_blobs:
        blobs.add(sha)
    return _table(rows), _blob_table(new_blobs)


def file_row(src):
    """The "file" row that makes a file exist in a rebuild even if TF never wrote to it."""
    return _table([_row(src, -1, 0, "file", 0, None)])


def unframed_row(src, offset, index, data):
    """Bytes after a file's last complete record (damaged, or a record never finished):
    kept as they are so the file comes back whole."""
    return _table([_row(src, index, offset, "unframed", len(data), bytes(data))])


def _table(rows):
    columns = list(zip(*rows)) if rows else [()] * len(_NAMES)
    arrays = []
    for f, values in zip((TFDBG_V2_RECORDS.field(n) for n in _NAMES), columns):
        if f.name == "record" and values and all(v is not None for v in values):
            arrays.append(binary_array(values))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, names=_NAMES)


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
        binary_array(datas)], names=[f.name for f in TFDBG_V2_BLOBS if f.name != "attempt"])


def add_rows(buffers, src, records, blobs):
    """Adds the rows of `records` of file `src` to a writer's ColumnBuffers (the blobs are
    registered as a segment of their own table, possibly after the records' segment: a kill
    between the two leaves a record whose blob is missing, which the rebuild reports and
    stops that file before). Returns the rows added."""
    table, blob_table = record_rows(src, records, blobs)
    if blob_table is not None:
        buffers.add_table(BLOBS_TABLE, blob_table)
    buffers.add_table("tfdbg_v2_records", table)
    return table.num_rows
