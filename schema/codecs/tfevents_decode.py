"""Records of a tfevents file -> store rows, in file order: the TF2 capture's tail (on the
recorder's writer thread) and `import-tfevents` alike.

Each record becomes one `tfevents_records` row (the raw bytes, so an export writes the file back
byte for byte) and, if its Event holds a summary, its decoded rows (`FileSource.decode`:
summary_decode.py, TF-free; the recorder passes its own protobuf decoder): scalars, histograms,
media (images, audio, text, pr-curves) and tensors (hparams, trace_export graphs, anything else),
with the tags under the file's namespace ("train/epoch_loss"). A payload that a decoded row holds
verbatim is left out of the raw row and named in its `cuts` (schema/codecs/tfevents_restore.py puts
it back), so it is stored once.

TF1's FileWriter writes a tag's plugin metadata only on the first value of that tag in a file:
the metadata is remembered per file and tag and given to the later values before decoding.
"""

import logging
import struct

import numpy as np

from ..errors import WireFormatError
from ..formats import native, tfevents, tfrecord
from ..formats.wire import varint
from .rows import ColumnBuffers
from .summary_decode import decode_summary
from .tfevents_restore import RAW_TABLE, payloads

log = logging.getLogger("tfblackbox")

MIN_CUT = 32      # payloads shorter than this stay in the record (a cut costs about as much)
_CUT_TABLES = ("media", "histograms", "tensors")


class FileSource:
    """One event file: its names, and what its records taught so far. `decode(summary bytes,
    step, wall_time, buffers)` turns a Summary into rows."""

    decode = staticmethod(decode_summary)

    def __init__(self, source, file, namespace):
        self.source = source          # absolute path when recorded
        self.file = file              # path in an exported logdir: namespace/name
        self.namespace = namespace    # prefix of the decoded rows' tags ("" for none)
        self.metadata = {}            # tag -> serialized SummaryMetadata last seen
        self.templates = {}           # (summary length, tag bytes) -> _Template
        self.tags = {}                # tag bytes -> (tag, namespaced tag, UTF-8): compiled path
        self.last_step, self.last_wall = 0, 0.0
        self.warned = set()

    def tag(self, tag):
        return f"{self.namespace}/{tag}" if self.namespace and tag else tag or self.namespace

    def warn_once(self, what, message, *args):
        if what not in self.warned:
            self.warned.add(what)
            log.warning("tfblackbox: " + message, *args)


class _Rows:
    """Stands in for the writer's buffers while one summary is decoded: the decoded rows are
    looked at (their payloads found in the record) before they go to the real buffers."""

    def __init__(self, src):
        self.src = src
        self.rows = []

    def add(self, table, **row):
        row["tag"] = self.src.tag(row["tag"])
        self.rows.append((table, row))

    def add_scalar(self, step, wall_time, tag, value):
        self.rows.append(("scalars", {"step": step, "wall_time": wall_time,
                                      "tag": self.src.tag(tag), "value": value}))

    def add_histogram(self, step, wall_time, tag, fields):
        self.add("histograms", step=step, wall_time=wall_time, tag=tag, source="histo",
                 bucket_lefts=None, **fields)

    def forward(self, buffers):
        for table, row in self.rows:
            if table == "scalars":
                buffers.add_scalar(row["step"], row["wall_time"], row["tag"], row["value"])
            else:
                buffers.add(table, **row)


_RAW_COLUMNS = ("step", "wall_time", "tag", "file", "source", "offset", "index", "what",
                "length", "crc", "record", "cuts")


def decode_records(src, records, buffers):
    """records: [(offset, index, data)] read in order from src's file. The raw rows of a
    chunk go to the buffers at once, after its decoded rows."""
    raw = {name: [] for name in _RAW_COLUMNS}
    nat = native.module() if type(buffers) is ColumnBuffers else None
    if nat is None:
        for offset, index, data in records:
            _add_raw(raw, decode_record(src, offset, index, data, buffers))
    else:
        _decode_compiled(nat, src, records, buffers, raw)
    buffers.add_many(RAW_TABLE, len(records), **raw)


def _add_raw(raw, row):
    for name in _RAW_COLUMNS:
        raw[name].append(row[name])


def _decode_compiled(nat, src, records, buffers, raw):
    """The compiled decoder takes the records it decodes exactly as decode_record would (the
    per-step kinds), straight into the column lists; each record it stops at is decoded
    here, and it goes on after it, so the rows keep their order."""
    records = records if type(records) is list else list(records)
    i, n = 0, len(records)
    scalars, histograms = buffers.columns("scalars"), buffers.columns("histograms")
    while i < n:
        i, rows, step, wall = nat.decode_events(
            records, i, src.file, src.source, src.namespace, src.metadata, src.tags, raw,
            scalars, histograms, buffers.attempt)
        buffers.rows += rows
        if step is not None:
            src.last_step, src.last_wall = step, wall
        if i < n:
            offset, index, data = records[i]
            _add_raw(raw, decode_record(src, offset, index, data, buffers))
            i += 1


def decode_record(src, offset, index, data, buffers):
    """Adds the decoded rows of one record to `buffers`; returns its raw row (a dict)."""
    raw = {"file": src.file, "source": src.source, "offset": offset, "index": index,
           "length": len(data), "crc": tfrecord.masked_crc(data), "record": data,
           "cuts": None, "step": src.last_step, "wall_time": src.last_wall, "tag": ""}
    if src.templates and _templated(src, data, buffers, raw):
        return raw
    try:
        ev = tfevents.parse_event(data)
    except tfevents.EventFormatError as e:
        src.warn_once("unparsed", "record %d of %s (byte offset %d) is not an Event (%s); "
                      "kept raw", index, src.source, offset, e)
        raw["what"] = "unparsed"
        return raw
    src.last_step, src.last_wall = ev.step, ev.wall_time
    tag = src.tag(ev.values[0].tag) if ev.values else src.tag(ev.tag) if ev.tag else ""
    raw.update(step=ev.step, wall_time=ev.wall_time, tag=tag, what=ev.what)
    spans = cuts = None
    if ev.values:
        spans, cuts = _fast(src, data, ev, buffers)
        if spans is None:
            spans, cuts = _decoded(src, data, ev, index, buffers)
        else:
            _learn(src, data, ev)
    if spans:
        raw.update(record=tfevents.cut(data, spans), cuts=cuts)
    return raw


def _decoded(src, data, ev, index, buffers):
    """The general path: src.decode decodes, the payloads are found in the record."""
    rows = _Rows(src)
    try:
        src.decode(_summary_bytes(src, data, ev), ev.step, ev.wall_time, rows)
    except Exception as e:   # the raw record keeps it all; say so once per file
        src.warn_once("decode", "a summary in record %d of %s (step %d) could not be "
                      "decoded (%s: %s); its record is kept raw", index, src.source,
                      ev.step, type(e).__name__, e)
        rows.rows = []
    spans, cuts = _cuts(data, rows.rows)
    rows.forward(buffers)
    return spans, cuts


def _fast(src, data, ev, buffers):
    """What a TF2 writer writes at every step -- one scalar or one histogram tensor -- decoded
    from the wire into the rows the summary decoders make (3x cheaper than protobuf and
    MakeNdarray on the writer thread, which shares the GIL with training); (None, None) for
    anything else."""
    if len(ev.values) != 1:
        return None, None
    v = ev.values[0]
    t = v.tensor
    if v.metadata is not None:
        src.metadata[v.tag] = bytes(data[v.metadata[0]:v.metadata[1]])
    plugin = v.plugin_name or _plugin(src.metadata.get(v.tag))
    if t is None or t.other or t.content is None or t.strings:
        return None, None
    start, end = t.content
    if plugin == "scalars" and not t.shape and (t.dtype, end - start) in _SCALAR_FORMATS:
        value = struct.unpack_from(_SCALAR_FORMATS[t.dtype, end - start], data, start)[0]
        buffers.add_scalar(ev.step, ev.wall_time, src.tag(v.tag), value)
        return [], []
    if (plugin == "histograms" and t.dtype == tfevents.DT_DOUBLE and len(t.shape) == 2 and
            t.shape[1] == 3 and t.shape[0] > 0 and end - start == 24 * t.shape[0]):
        arr = np.frombuffer(data, "<f8", 3 * t.shape[0], start).reshape(-1, 3)
        counts = arr[:, 2].copy()
        row = {"num": float(counts.sum()), "min": float(arr[0, 0]), "max": float(arr[-1, 1]),
               "sum": None, "sum_squares": None, "bucket_limits": arr[:, 1].copy(),
               "bucket_counts": counts, "bucket_lefts": arr[:, 0].copy(), "source": "tensor"}
        tag = src.tag(v.tag)
        buffers.add("histograms", step=ev.step, wall_time=ev.wall_time, tag=tag, **row)
        return [(start, end)], [{"at": start, "size": end - start, "table": "histograms",
                                 "tag": tag, "index": 0, "part": 0}]
    return None, None


_SCALAR_FORMATS = {(1, 4): "<f", (2, 8): "<d"}   # DT_FLOAT, DT_DOUBLE in tensor_content


# -- templates: a TF2 writer's records of one tag differ only in wall time, step and value ------

class _Template:
    """The bytes of a summary that _fast decoded, around its tensor content: a record of the
    same file whose summary has the same bytes around a content of the same length is the
    same value with another content, decoded without parsing (import-tfevents of a TF2
    file: 1.5x less CPU in all)."""

    __slots__ = ("prefix", "suffix", "size", "tag", "scalar", "buckets")

    def __init__(self, prefix, suffix, size, tag, scalar, buckets):
        self.prefix, self.suffix, self.size = prefix, suffix, size
        self.tag, self.scalar, self.buckets = tag, scalar, buckets


_WALL = struct.Struct("<d")


def _summary_key(data):
    """(start of the summary, its template key) of an Event of wall_time, step and a summary
    whose first value starts with its tag; None for any other layout."""
    try:
        return _key_of(data)
    except (IndexError, WireFormatError):
        return None


def _key_of(data):
    n = len(data)
    if n < 14 or data[0] != 0x09:
        return None
    i = 9
    if data[9] == 0x10:
        i = 10
        while data[i] >= 0x80:
            i += 1
        i += 1
    if i >= n or data[i] != 0x2A:
        return None
    size, j = varint(data, i + 1)
    if j + size != n or j + 4 > n or data[j] != 0x0A:
        return None
    _vsize, p = varint(data, j + 1)
    if p >= n or data[p] != 0x0A:
        return None
    tsize, q = varint(data, p + 1)
    return j, (size, data[q:q + tsize])


def _learn(src, data, ev):
    """Keeps the template of a record _fast decoded, if its value carries its own metadata
    (so nothing earlier in the file decides its plugin)."""
    v = ev.values[0]
    found = _summary_key(data)
    if v.metadata is None or found is None or len(src.templates) >= 4096:
        return
    start, key = found
    if key in src.templates or start != ev.summary[0]:
        return
    t = v.tensor
    c0, c1 = t.content
    scalar = _SCALAR_FORMATS.get((t.dtype, c1 - c0)) if not t.shape else None
    src.templates[key] = _Template(bytes(data[start:c0]), bytes(data[c1:]), c1 - c0,
                                   src.tag(v.tag), scalar, None if scalar else t.shape[0])


def _templated(src, data, buffers, raw):
    """Decodes a record that matches a template of its file into `buffers` and `raw`;
    False (touching nothing) otherwise."""
    found = _summary_key(data)
    if found is None:
        return False
    start, key = found
    tpl = src.templates.get(key)
    if tpl is None:
        return False
    at = start + len(tpl.prefix)
    end = at + tpl.size
    if end + len(tpl.suffix) != len(data) or data[start:at] != tpl.prefix or \
            data[end:] != tpl.suffix:
        return False
    wall = _WALL.unpack_from(data, 1)[0]
    step = varint(data, 10)[0] if data[9] == 0x10 else 0
    step = step - (1 << 64) if step >= 1 << 63 else step
    src.last_step, src.last_wall = step, wall
    raw.update(step=step, wall_time=wall, tag=tpl.tag, what="summary")
    if tpl.scalar is not None:
        buffers.add_scalar(step, wall, tpl.tag, struct.unpack_from(tpl.scalar, data, at)[0])
        return True
    arr = np.frombuffer(data, "<f8", 3 * tpl.buckets, at).reshape(-1, 3)
    counts = arr[:, 2].copy()
    buffers.add("histograms", step=step, wall_time=wall, tag=tpl.tag, num=float(counts.sum()),
                min=float(arr[0, 0]), max=float(arr[-1, 1]), sum=None, sum_squares=None,
                bucket_limits=arr[:, 1].copy(), bucket_counts=counts,
                bucket_lefts=arr[:, 0].copy(), source="tensor")
    raw.update(record=data[:at] + data[end:], cuts=[{
        "at": at, "size": tpl.size, "table": "histograms", "tag": tpl.tag, "index": 0,
        "part": 0}])
    return True


def _plugin(metadata):
    return tfevents.plugin_name(metadata) if metadata else ""


def add_unframed(src, offset, data, buffers):
    """Bytes of a file that are no complete record (after damage, or a half-written tail)."""
    buffers.add(RAW_TABLE, step=src.last_step, wall_time=src.last_wall, tag="",
                file=src.file, source=src.source, offset=offset, index=-1, what="unframed",
                length=len(data), crc=None, record=data, cuts=None)


def _summary_bytes(src, data, ev):
    need = False
    for v in ev.values:
        if v.metadata is not None:
            src.metadata[v.tag] = bytes(data[v.metadata[0]:v.metadata[1]])
        elif v.tag in src.metadata:
            need = True
    if need:
        return tfevents.with_metadata(data, ev.values, lambda v: src.metadata.get(v.tag))
    return data[ev.summary[0]:ev.summary[1]]


def _cuts(data, rows):
    """Spans of `data` that decoded rows hold verbatim, and their cut descriptions."""
    spans, cuts, seen = [], [], set()
    for table, row in rows:
        if table not in _CUT_TABLES:
            continue
        index = (row.get("index") or 0) if table == "media" else 0
        if (table, row["tag"], index) in seen:
            continue   # two rows of one key in a record: keep the second's bytes in place
        seen.add((table, row["tag"], index))
        for part, payload in enumerate(payloads(table, row)):
            if payload is None or len(payload) < MIN_CUT:
                continue
            payload = bytes(payload)
            at = data.find(payload)
            while at >= 0 and any(at < e and s < at + len(payload) for s, e in spans):
                at = data.find(payload, at + 1)
            if at < 0:
                continue
            spans.append((at, at + len(payload)))
            cuts.append({"at": at, "size": len(payload), "table": table, "tag": row["tag"],
                         "index": index, "part": part})
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    return [spans[i] for i in order], [cuts[i] for i in order]
