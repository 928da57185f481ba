"""A chunk of a tfevents file -> store rows without a Python object per record
(import-tfevents): RecordReader.read_spans frames it, the compiled decode_chunk decodes its
records of the per-step kinds into flat columns, and this wraps them as Arrow tables without
copying (about 15x less CPU a record than decode_records' column lists and their conversion).

The rows are decode_records' exactly (tests/test_tfevents_columns.py holds them to it, byte
for byte, damage included), in the form the store keeps: a histogram's edges that the store
would not keep (codecs/histogram_edges.py) are not written at all, which made an import of
tools/bench_tensorboard's 15.7 MB 130 -> 107 ms and 176 -> 150 ms of CPU (medians of twelve);
Store.read and segments.read_back give them back, as for every row. A record decode_chunk
stops at goes through decode_record, and without the extension (or TFBLACKBOX_PURE_PYTHON=1)
the whole chunk goes through decode_records. ColumnBuffers keeps the order the rows were
added in.
"""

import struct

import numpy as np
import pyarrow as pa

from ..formats import native
from ..formats.tfevents import EVENT_KINDS
from ..tables import schema_of
from ..tables.tfevents import CUT
from .rows import ColumnBuffers
from .tfevents_decode import decode_records
from .tfevents_restore import RAW_TABLE

# a run of records decode_chunk decoded shorter than this goes through decode_records
# instead: Arrow tables cost ~0.4-1 ms each to make and to concatenate, so a file whose
# records are odd every few hundred would cost more this way than the column lists' way
MIN_RUN = 1024
# records then decoded through decode_records before decode_chunk is tried again: a file of
# odd kinds (TF1's many-valued summaries) costs one decode_chunk call a block, not a record
LIST_BLOCK = 256

_WHAT = pa.array(["empty"] + [EVENT_KINDS.get(k, "") for k in range(1, 11)], pa.string())
_LEN = struct.Struct("<Q")
(R_STEP, R_WALL, R_TAG, R_OFFSET, R_INDEX, R_WHAT, R_LENGTH, R_CRC, R_REC_END, R_DATA, R_CUT,
 C_AT, C_SIZE, S_STEP, S_WALL, S_TAG, S_VALUE, H_STEP, H_WALL, H_TAG, H_NUM, H_MIN, H_MAX,
 H_END, H_LIMITS, H_COUNTS, H_LEFTS, H_LIMITS_END, H_LEFTS_END) = range(29)


def decode_next(src, reader, buffers, max_bytes):
    """Reads the next chunk of complete records of reader's file (tfrecord.RecordReader, at
    most about max_bytes) into `buffers`: (records, bytes of their data), (0, 0) at the end;
    raises CorruptRecordError as RecordReader.read does. Without the extension, the records
    as read() gives them, to decode_records."""
    first = reader.index
    if native.module() is None or type(buffers) is not ColumnBuffers:
        batch = reader.read(max_bytes)
        records = [(off, first + i, data) for i, (off, data) in enumerate(batch)]
        decode_records(src, records, buffers)
        return len(records), sum(len(d) for _o, _i, d in records)
    buf, base, spans = reader.read_spans(max_bytes)
    return decode_chunk(src, buf, base, spans, first, buffers)


def decode_chunk(src, buf, base, spans, first_index, buffers):
    """The records at `spans` (RecordReader.read_spans: int64 positions in buf, as bytes; buf
    is at byte `base` of src's file; the first is record number `first_index`) -> rows in
    `buffers`, as decode_records makes them. Returns (records, bytes of their data)."""
    view = np.frombuffer(spans, np.int64)
    n = len(view)
    nat = native.module() if type(buffers) is ColumnBuffers else None
    if nat is None:
        records = _records(buf, base, view, first_index, 0, n)
        decode_records(src, records, buffers)
        return n, sum(len(d) for _o, _i, d in records)
    i, size = 0, 0
    while i < n:
        j = i   # fewer records left than a run: not worth a try
        if n - i >= MIN_RUN:
            j, step, wall, tags, cols = nat.decode_chunk(buf, spans, i, base, first_index,
                                                         src.namespace, src.metadata, src.tags)
        if j - i < MIN_RUN:   # short (an odd record, or a small file): the column lists
            end = min(n, j + 1 + LIST_BLOCK)
            records = _records(buf, base, view, first_index, i, end)
            decode_records(src, records, buffers)
            size += sum(len(d) for _o, _i, d in records)
            i = end
            continue
        if step is not None:
            src.last_step, src.last_wall = step, wall
        size += int(np.frombuffer(cols[R_LENGTH], np.int64).sum())
        _add(src, buffers, tags, cols)
        i = j
    return n, size


class SpanChunk:
    """Consecutive complete records of one read_spans buffer, for a tail's writer job: a
    sequence of (offset, index, data) like RecordReader.read's records (made on demand, for
    the rare caller that needs one), decoded whole by decode_chunk (`decode_into`)."""

    def __init__(self, buf, base, spans, first_index, nbytes):
        self.buf, self.base, self.spans, self.first = buf, base, spans, first_index
        self.view = np.frombuffer(spans, np.int64)
        self.nbytes = nbytes   # bytes of the records' data

    @classmethod
    def split(cls, buf, base, spans, first_index, max_bytes):
        """read_spans' output cut into chunks of about max_bytes of record data each."""
        view = np.frombuffer(spans, np.int64)
        if not len(view):
            return []
        raw = np.frombuffer(buf, np.uint8)
        lengths = raw[view[:, None] + np.arange(8)].copy().view("<u8").ravel().astype(np.int64)
        ends = np.cumsum(lengths)
        out, start = [], 0
        while start < len(view):   # greedy, as the tail cuts read()'s records
            before = int(ends[start - 1]) if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, before + max_bytes, side="right")))
            out.append(cls(buf, base, spans[start * 8:stop * 8], first_index + start,
                           int(ends[stop - 1]) - before))
            start = stop
        return out

    def __len__(self):
        return len(self.view)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = range(len(self))[k]
        return _records(self.buf, self.base, self.view, self.first, k, k + 1)[0]

    def __iter__(self):
        return iter(_records(self.buf, self.base, self.view, self.first, 0, len(self)))

    def decode_into(self, src, buffers):
        """The chunk's rows into `buffers`, as decode_records makes them."""
        return decode_chunk(src, self.buf, self.base, self.spans, self.first, buffers)


def _records(buf, base, view, first_index, start, end):
    """[(offset, index, data)] of records start..end-1, for decode_records."""
    out = []
    for k in range(start, end):
        p = int(view[k])
        (length,) = _LEN.unpack_from(buf, p)
        out.append((base + p, first_index + k, buf[p + 12:p + 12 + length]))
    return out


# -- decode_chunk's columns -> Arrow --------------------------------------------------------

def _array(typ, data, n, validity=None):
    return pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(data)])


def _strings(values, indices):
    return pa.array(values, pa.string()).take(indices)


def _lists(ends, flat):
    return pa.ListArray.from_arrays(ends, _array(pa.float64(), flat, len(flat) // 8))


def _add(src, buffers, tags, cols):
    attempt = buffers.attempt
    n = len(cols[R_STEP]) // 8
    if not n:
        return
    raw_tags = _array(pa.int32(), cols[R_TAG], n)
    ns = len(cols[S_STEP]) // 8
    if ns:
        buffers.add_table("scalars", pa.Table.from_arrays([
            _array(pa.int64(), cols[S_STEP], ns), _array(pa.float64(), cols[S_WALL], ns),
            _strings(tags, _array(pa.int32(), cols[S_TAG], ns)), _attempts(attempt, ns),
            _array(pa.float64(), cols[S_VALUE], ns)], schema=schema_of("scalars")))
    nh = len(cols[H_STEP]) // 8
    if nh:
        ends = _array(pa.int32(), cols[H_END], nh + 1)
        # the edges in the store's form, as decode_chunk cut them (histogram_edges.py)
        limit_ends = _array(pa.int32(), cols[H_LIMITS_END], nh + 1)
        left_ends = _array(pa.int32(), cols[H_LEFTS_END], nh + 1)
        nulls = pa.nulls(nh, pa.float64())
        buffers.add_table("histograms", pa.Table.from_arrays([
            _array(pa.int64(), cols[H_STEP], nh), _array(pa.float64(), cols[H_WALL], nh),
            _strings(tags, _array(pa.int32(), cols[H_TAG], nh)), _attempts(attempt, nh),
            _array(pa.float64(), cols[H_NUM], nh), _array(pa.float64(), cols[H_MIN], nh),
            _array(pa.float64(), cols[H_MAX], nh), nulls, nulls,
            _lists(limit_ends, cols[H_LIMITS]), _lists(ends, cols[H_COUNTS]),
            _lists(left_ends, cols[H_LEFTS]),
            _strings(["tensor"], pa.array(np.zeros(nh, np.int32)))],
            schema=schema_of("histograms")))
    # the raw rows: a histogram's record without its content, which `cuts` names
    zeros = pa.array(np.zeros(n, np.int32))
    has_cut = np.frombuffer(cols[R_CUT], np.uint8).astype(bool)
    nc = int(has_cut.sum())
    cut_rows = np.flatnonzero(has_cut).astype(np.int32)
    cuts = pa.StructArray.from_arrays([
        _array(pa.int64(), cols[C_AT], nc), _array(pa.int64(), cols[C_SIZE], nc),
        _strings(["histograms"], zeros.slice(0, nc)),
        _strings(tags, raw_tags.take(pa.array(cut_rows))), zeros.slice(0, nc),
        zeros.slice(0, nc)], fields=list(CUT))
    cut_ends = np.zeros(n + 1, np.int32)
    np.cumsum(has_cut, out=cut_ends[1:])
    cut_lists = pa.ListArray.from_arrays(pa.array(cut_ends), cuts, type=pa.list_(CUT),
                                         mask=pa.array(~has_cut))
    records = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(cols[R_REC_END]),
                                                     pa.py_buffer(cols[R_DATA])])
    buffers.add_table(RAW_TABLE, pa.Table.from_arrays([
        _array(pa.int64(), cols[R_STEP], n), _array(pa.float64(), cols[R_WALL], n),
        _strings(tags, raw_tags), _attempts(attempt, n), _strings([src.file], zeros),
        _strings([src.source], zeros), _array(pa.int64(), cols[R_OFFSET], n),
        _array(pa.int64(), cols[R_INDEX], n), _WHAT.take(_array(pa.int32(), cols[R_WHAT], n)),
        _array(pa.int64(), cols[R_LENGTH], n), _array(pa.int64(), cols[R_CRC], n), records,
        cut_lists], schema=schema_of(RAW_TABLE)))


def _attempts(attempt, n):
    return pa.array(np.full(n, attempt, np.int32), pa.int32())
