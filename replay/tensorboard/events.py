"""Stored rows -> serialized tfevents Events, in the protobuf wire format (no TensorFlow, no
protos): for rows that came from no tfevents file (the TF1 hooks, recorder.log, Keras'
MetricsLogger). Each value is written in the form TensorFlow wrote it, so TensorBoard shows
what it shows for SummarySaverHook's files:

- scalars: `simple_value` (float32, as tf.compat.v1.summary.scalar) when every value of the
  tag is a float32 exactly, else a float64 scalar tensor with the scalars plugin's metadata;
- histograms: a HistogramProto (`histo`), or the histograms plugin's [k, 3] float64 tensor
  when that is what was recorded (bucket_lefts);
- images and audio: Summary.Image / Summary.Audio when recorded from those (they carry a
  colorspace / sample rate), else the images plugin's [w, h, png...] / the audio plugin's
  [k, 2] string tensors; GIFs stay GIFs;
- text, pr-curves: the text / pr_curves plugin tensors; other tensors: their TensorProto
  bytes as recorded with their plugin metadata (hparams, graphs, anything else);
- debug-dump partition graphs: `graph_def` Events; the run's config: an hparams
  session_start_info summary.

Event: wall_time 1, step 2, graph_def 4, summary 5. Summary: value 1. Value: tag 1,
simple_value 2, image 4, histo 5, audio 6, tensor 8, metadata 9.
"""

import json
import struct

import numpy as np

from tfblackbox.schema.formats.wire import encode_varint

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
DT_FLOAT, DT_DOUBLE, DT_STRING = 1, 2, 7
# SummaryMetadata.data_class: what TensorBoard's plugins write
SCALAR, TENSOR, BLOB_SEQUENCE = 1, 2, 3
UNDECODABLE = "tfblackbox/undecodable"


def ld(number, payload):
    """One length-delimited field."""
    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload


def _varint_field(number, value):
    return encode_varint(number << 3) + encode_varint(value & 0xFFFFFFFFFFFFFFFF)


def _double(number, value):
    return bytes([number << 3 | 1]) + _DOUBLE.pack(value)


def event(wall_time, step, summary=None, graph_def=None):
    """The bytes of one Event: a Summary's bytes (its values concatenated) or a GraphDef."""
    out = b"\x09" + _DOUBLE.pack(wall_time)
    if step:
        out += b"\x10" + encode_varint(step & 0xFFFFFFFFFFFFFFFF)
    if graph_def is not None:
        out += ld(4, graph_def)
    if summary is not None:
        out += ld(5, summary)
    return out


def value(tag, body):
    """A Summary's `value` field: Value(tag, ...body fields)."""
    return ld(1, ld(1, tag.encode("utf-8", "surrogateescape")) + body)


def metadata(plugin, content=None, data_class=None):
    plugin_data = ld(1, plugin.encode()) + (ld(2, content) if content else b"")
    return ld(9, ld(1, plugin_data) + (_varint_field(4, data_class) if data_class else b""))


def tensor(dtype, shape, content=None, strings=()):
    body = _varint_field(1, dtype) + ld(2, b"".join(ld(2, _varint_field(1, d) if d else b"")
                                                    for d in shape))
    if content is not None:
        body += ld(4, content)
    for s in strings:
        body += ld(8, s)
    return ld(8, body)


# -- scalars ---------------------------------------------------------------------------------

def float32_exact(values):
    """True when every value survives a trip through float32 (NaN and infinities do)."""
    arr = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        back = arr.astype(np.float32).astype(np.float64)
    return bool(np.all((back == arr) | np.isnan(arr)))


def simple_scalar(tag, v):
    return value(tag, b"\x15" + _FLOAT.pack(v))


_SCALARS_META = metadata("scalars", data_class=SCALAR)


def double_scalar(tag, v):
    return value(tag, tensor(DT_DOUBLE, [], _DOUBLE.pack(v)) + _SCALARS_META)


# -- histograms ------------------------------------------------------------------------------

_HISTO_META = metadata("histograms", data_class=TENSOR)


def histogram(tag, row):
    limits = np.asarray(row["bucket_limits"] or [], "<f8")
    counts = np.asarray(row["bucket_counts"] or [], "<f8")
    if row.get("source") == "tensor" and row.get("bucket_lefts") is not None:
        lefts = np.asarray(row["bucket_lefts"], "<f8")
        k = len(counts)
        return value(tag, tensor(DT_DOUBLE, [k, 3], np.column_stack([lefts, limits, counts])
                                 .astype("<f8").tobytes()) + _HISTO_META)
    body = b"".join(_double(n, row[name] or 0.0) for n, name in (
        (1, "min"), (2, "max"), (3, "num"), (4, "sum"), (5, "sum_squares")) if row[name])
    if len(limits):
        body += ld(6, limits.tobytes())
    if len(counts):
        body += ld(7, counts.tobytes())
    return value(tag, ld(5, body))


# -- media -----------------------------------------------------------------------------------

def image(tag, row):
    """A Summary.Image value (TF1's image summaries, GIFs included)."""
    body = b"".join(_varint_field(n, row[k]) for n, k in ((1, "height"), (2, "width"),
                                                           (3, "colorspace")) if row[k])
    return value(tag, ld(4, body + ld(4, row["data"])))


def image_tensor(tag, rows):
    """The images plugin's tensor: [width, height, image, ...] (rows of one step and tag)."""
    first = rows[0]
    strings = [str(first["width"] or 0).encode(), str(first["height"] or 0).encode()]
    strings += [r["data"] for r in rows]
    return value(tag, tensor(DT_STRING, [len(strings)], strings=strings) +
                 metadata("images", first["plugin_content"], BLOB_SEQUENCE))


def audio(tag, row):
    """A Summary.Audio value (TF1's audio summaries)."""
    body = b"\x0d" + _FLOAT.pack(row["sample_rate"] or 0.0)
    if row["num_channels"]:
        body += _varint_field(2, row["num_channels"])
    if row["length_frames"]:
        body += _varint_field(3, row["length_frames"])
    body += ld(4, row["data"])
    if row["content_type"]:
        body += ld(5, row["content_type"].encode())
    return value(tag, ld(6, body))


def audio_tensor(tag, rows):
    """The audio plugin's [k, 2] tensor of (clip, label); labels are not kept: empty."""
    strings = []
    for r in rows:
        strings += [r["data"], b""]
    return value(tag, tensor(DT_STRING, [len(rows), 2], strings=strings) +
                 metadata("audio", rows[0]["plugin_content"], BLOB_SEQUENCE))


def text(tag, row):
    if row["content_type"] == "application/json":
        nested = json.loads(row["data"])
        arr = np.array(nested, dtype=object)
        shape = list(arr.shape)
        strings = [str(s).encode() for s in arr.reshape(-1)]
    else:
        shape, strings = [], [row["data"]]
    return value(tag, tensor(DT_STRING, shape, strings=strings) +
                 metadata("text", row["plugin_content"], TENSOR))


_PR_ROWS = ("tp", "fp", "tn", "fn", "precision", "recall")


def pr_curve(tag, row):
    data = json.loads(row["data"])
    arr = np.array([data[k] for k in _PR_ROWS], dtype="<f4")
    return value(tag, tensor(DT_FLOAT, list(arr.shape), arr.tobytes()) +
                 metadata("pr_curves", row["plugin_content"], TENSOR))


def other_tensor(tag, row):
    """A tensors row as recorded; bytes no decoder understood go in a string tensor under
    their own plugin name (TensorBoard skips plugins it does not know)."""
    if row["plugin_name"] == UNDECODABLE:
        return value(tag, tensor(DT_STRING, [], strings=[row["plugin_content"] or b""]) +
                     metadata(UNDECODABLE))
    if row["tensor"] is None:   # an empty value, kept as such
        return value(tag, b"")
    meta = metadata(row["plugin_name"], row["plugin_content"]) if row["plugin_name"] else \
        ld(9, b"")   # TF1's tensor_summary writes an empty SummaryMetadata
    return value(tag, ld(8, row["tensor"]) + meta)


# -- the run's config as hparams ---------------------------------------------------------------

def hparams_session_start(config, start_time):
    """The hparams plugin's session_start_info value (what `hp.hparams(...)` writes), the
    config flattened to "a.b" keys; lists and other values as JSON strings."""
    entries = b""
    for key, v in sorted(_flatten(config).items()):
        if isinstance(v, bool):
            pv = _varint_field(4, int(v))
        elif isinstance(v, (int, float)):
            pv = _double(2, float(v))
        else:
            pv = ld(3, (v if isinstance(v, str) else json.dumps(v, default=str)).encode())
        entries += ld(1, ld(1, key.encode()) + ld(2, pv))
    start = entries + _double(5, start_time)   # SessionStartInfo.start_time_secs
    plugin_data = ld(3, start)                  # HParamsPluginData.session_start_info
    return value("_hparams_/session_start_info",
                 tensor(DT_FLOAT, [0]) + metadata("hparams", plugin_data))


def _flatten(config, prefix=""):
    out = {}
    for k, v in (config or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
