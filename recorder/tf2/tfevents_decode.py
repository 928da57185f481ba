"""Records of a tailed tfevents file -> store rows (runs on the writer thread, in file order).

Each record becomes one `tfevents_records` row (the raw bytes, so an export writes the file
back byte for byte) and, if its Event holds a summary, the decoded rows of
recorder/summaries.py: scalars, histograms, media (images, audio, text, pr-curves) and tensors
(hparams, trace_export graphs, anything else), with the tags under the file's namespace
("train/epoch_loss"). A payload that a decoded row holds verbatim is left out of the raw row
and named in its `cuts` (schema/tfevents_restore.py puts it back), so it is stored once.

TF1's FileWriter writes a tag's plugin metadata only on the first value of that tag in a file:
the metadata is remembered per file and tag and given to the later values before decoding.
"""

import logging

from tfblackbox.schema.formats import tfevents, tfrecord
from tfblackbox.schema.tfevents_restore import RAW_TABLE, payloads

from ..summaries import decode_summary

log = logging.getLogger("tfblackbox")

MIN_CUT = 32      # payloads shorter than this stay in the record (a cut costs about as much)
_CUT_TABLES = ("media", "histograms", "tensors")


class FileSource:
    """One event file: its names, and what its records taught so far."""

    def __init__(self, source, file, namespace):
        self.source = source          # absolute path when recorded
        self.file = file              # path in an exported logdir: namespace/name
        self.namespace = namespace    # prefix of the decoded rows' tags ("" for none)
        self.metadata = {}            # tag -> serialized SummaryMetadata last seen
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


def decode_records(src, records, buffers):
    """records: [(offset, index, data)] read in order from src's file."""
    for offset, index, data in records:
        decode_record(src, offset, index, data, buffers)


def decode_record(src, offset, index, data, buffers):
    key = {"file": src.file, "source": src.source, "offset": offset, "index": index,
           "length": len(data), "crc": tfrecord.masked_crc(data)}
    try:
        ev = tfevents.parse_event(data)
    except tfevents.EventFormatError as e:
        src.warn_once("unparsed", "record %d of %s (byte offset %d) is not an Event (%s); "
                      "kept raw", index, src.source, offset, e)
        buffers.add(RAW_TABLE, step=src.last_step, wall_time=src.last_wall, tag="",
                    what="unparsed", record=data, cuts=None, **key)
        return
    src.last_step, src.last_wall = ev.step, ev.wall_time
    rows = _Rows(src)
    if ev.values:
        try:
            decode_summary(_summary_bytes(src, data, ev), ev.step, ev.wall_time, rows)
        except Exception as e:   # the raw record keeps it all; say so once per file
            src.warn_once("decode", "a summary in record %d of %s (step %d) could not be "
                          "decoded (%s: %s); its record is kept raw", index, src.source,
                          ev.step, type(e).__name__, e)
            rows.rows = []
    spans, cuts = _cuts(data, rows.rows)
    rows.forward(buffers)
    tag = src.tag(ev.values[0].tag) if ev.values else src.tag(ev.tag) if ev.tag else ""
    buffers.add(RAW_TABLE, step=ev.step, wall_time=ev.wall_time, tag=tag, what=ev.what,
                record=tfevents.cut(data, spans) if spans else data, cuts=cuts or None, **key)


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
