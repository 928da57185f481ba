"""The test oracle for schema/codecs/summary_decode.py: a serialized tf.Summary decoded with
TensorFlow's own protos (summary_pb2, tensor_util), independently of the wire decoder the
recorder uses. (It was the recorder's decoder until the one wire decoder replaced it.)

Every value lands somewhere: simple_value and scalar tensors -> scalars; `histo` and
histogram-plugin tensors -> histograms; images, audio, text and pr-curves -> media (bytes as
written); any other tensor -> tensors (raw TensorProto bytes). Nothing is dropped.
"""

import json
import math
import logging

import numpy as np

from tfblackbox.schema.errors import WireFormatError
from tfblackbox.schema.formats import dtypes
from tfblackbox.schema.formats.wire import encode_varint, walk as wire_fields

log = logging.getLogger("tfblackbox")

_PNG, _GIF, _JPEG = b"\x89PNG", b"GIF8", b"\xff\xd8\xff"
_PR_ROWS = ("tp", "fp", "tn", "fn", "precision", "recall")


def _summary_cls():
    from tensorflow.core.framework import summary_pb2
    return summary_pb2.Summary


def _ndarray(tensor_proto):
    from tensorflow.python.framework import tensor_util
    return tensor_util.MakeNdarray(tensor_proto)


def image_content_type(data):
    if data.startswith(_PNG):
        return "image/png"
    if data.startswith(_GIF):
        return "image/gif"
    if data.startswith(_JPEG):
        return "image/jpeg"
    return "application/octet-stream"


def decode_summary(serialized, step, wall_time, buffers):
    """Parses one serialized Summary and appends its values to `buffers`, value by value, each
    through TF's protobuf classes. A value whose tag is not UTF-8 (protobuf refuses it) is kept
    under its tag with the bad bytes escaped, with a warning. Bytes that do not parse at all are
    kept raw in a `tensors` row (plugin_name UNDECODABLE) and raised as WireFormatError once the
    rest of the Summary is recorded, so the writer reports them (WriterError, the catalog)."""
    data = serialized if isinstance(serialized, bytes) else bytes(serialized)
    i, n, bad = 0, len(data), []
    while i < n:
        try:
            number, wire, _f, start, end = next(wire_fields(data, i))
        except WireFormatError as e:
            bad.append(_keep_undecodable(data[i:], "", step, wall_time, buffers,
                                         f"the Summary's bytes from offset {i} do not parse "
                                         f"({e})"))
            break
        if number != 1 or wire != 2:   # Summary has only `value`: keep anything else raw
            _keep_undecodable(data[i:end], "", step, wall_time, buffers,
                              f"unknown Summary field {number} (wire type {wire})")
        else:
            bad.extend(_decode_value_bytes(data[start:end], step, wall_time, buffers))
        i = end
    if bad:
        raise WireFormatError("; ".join(bad))


def _decode_slow(data, step, wall_time, buffers, offset=0):
    """Every value from byte `offset` on through protobuf alone: the reference the tests hold
    the wire path to."""
    for value in _summary_cls().FromString(data[offset:]).value:
        _decode_value(value, step, wall_time, buffers)


def _value_cls():
    return _summary_cls().Value


def _decode_value_bytes(raw, step, wall_time, buffers):
    """Decodes one Value; returns the problems it could not fix ([] when it was kept whole)."""
    from google.protobuf.message import DecodeError
    try:
        value = _value_cls().FromString(raw)
    except DecodeError:   # most likely a tag that is not UTF-8
        tag_bytes = _tag_bytes(raw)
        tag = tag_bytes.decode("utf-8", "backslashreplace") if tag_bytes is not None else ""
        try:
            value = _value_cls().FromString(_with_tag(raw, tag))
        except DecodeError as e:
            return [_keep_undecodable(raw, tag, step, wall_time, buffers,
                                      f"summary value {tag!r} does not parse ({e})")]
        if tag_bytes is not None and tag != tag_bytes.decode("utf-8", "replace"):
            log.warning("tfblackbox: summary tag %r at step %s is not UTF-8; recorded with "
                        "its bad bytes escaped as %r", tag_bytes, step, tag)
    _decode_value(value, step, wall_time, buffers)
    return []


def _tag_bytes(raw):
    try:
        for number, wire, _f, start, end in wire_fields(raw):
            if number == 1 and wire == 2:
                return bytes(raw[start:end])
    except WireFormatError:
        pass
    return None


def _with_tag(raw, tag):
    """The Value bytes with field 1 (tag) replaced by `tag` (UTF-8)."""
    out, encoded = bytearray(), tag.encode("utf-8")
    try:
        for number, wire, field, _start, end in wire_fields(raw):
            if number == 1 and wire == 2:
                out += b"\x0a" + encode_varint(len(encoded)) + encoded
            else:
                out += raw[field:end]
    except WireFormatError:
        return raw
    return bytes(out)


UNDECODABLE = "tfblackbox/undecodable"


def _keep_undecodable(raw, tag, step, wall_time, buffers, why):
    """Nothing is dropped: bytes no decoder understands become a `tensors` row of their own.
    Returns the message (also logged)."""
    message = (f"step {step}: {why}; its {len(raw)} bytes are kept as a tensors row with "
               f"plugin_name {UNDECODABLE!r}")
    log.warning("tfblackbox: %s", message)
    buffers.add("tensors", step=step, wall_time=wall_time, tag=tag, dtype=None, shape=None,
                plugin_name=UNDECODABLE, plugin_content=bytes(raw), tensor=None)
    return message


def _decode_value(v, step, wall, buf):
    which = v.WhichOneof("value")
    if which == "simple_value":
        buf.add_scalar(step, wall, v.tag, v.simple_value)
        return
    key = dict(step=step, wall_time=wall, tag=v.tag)
    if which == "histo":
        buf.add("histograms", source="histo", **histo_fields(v.histo), **key)
    elif which == "image":
        im = v.image
        data = im.encoded_image_string
        buf.add("media", kind="image", index=0, content_type=image_content_type(data), data=data,
                width=im.width, height=im.height, colorspace=im.colorspace, **key)
    elif which == "audio":
        a = v.audio
        buf.add("media", kind="audio", index=0, content_type=a.content_type or "audio/wav",
                data=a.encoded_audio_string, sample_rate=a.sample_rate,
                num_channels=a.num_channels, length_frames=a.length_frames, **key)
    elif which == "tensor":
        _decode_tensor(v, key, buf)
    elif which == "obsolete_old_style_histogram":
        _keep_tensor(v, key, buf)   # never written by TF >= 1.0; kept as a tensor row
    else:   # an empty value: keep it visible rather than lose it
        buf.add("tensors", dtype=None, shape=None, plugin_name="", plugin_content=None,
                tensor=None, **key)


def histo_fields(h):
    """A HistogramProto's fields, as protobuf gives them."""
    return {"min": h.min, "max": h.max, "num": h.num, "sum": h.sum, "sum_squares": h.sum_squares,
            "bucket_limits": list(h.bucket_limit), "bucket_counts": list(h.bucket)}


def _decode_tensor(v, key, buf):
    t = v.tensor
    plugin = v.metadata.plugin_data.plugin_name
    rank = len(t.tensor_shape.dim)
    try:
        if plugin == "scalars" or (not plugin and rank == 0 and _is_numeric(t.dtype)):
            buf.add("scalars", value=float(_ndarray(t)), **key)
        elif plugin == "histograms":
            _histogram_tensor(_ndarray(t), key, buf)
        elif plugin == "images":
            _image_tensor(_ndarray(t), v, key, buf)
        elif plugin == "audio":
            _audio_tensor(_ndarray(t), v, key, buf)
        elif plugin == "text":
            _text_tensor(_ndarray(t), v, key, buf)
        elif plugin == "pr_curves":
            _pr_curve_tensor(_ndarray(t), v, key, buf)
        else:
            _keep_tensor(v, key, buf)
    except (ValueError, TypeError, IndexError):
        _keep_tensor(v, key, buf)   # an unexpected shape for its plugin: keep it raw


def _is_numeric(dtype):
    # DT_FLOAT..DT_INT64, DT_BOOL, DT_HALF, DT_BFLOAT16, unsigned ints; not strings/resources
    return dtype in (1, 2, 3, 4, 5, 6, 9, 10, 14, 17, 19, 22, 23)


def _keep_tensor(v, key, buf):
    t = v.tensor
    buf.add("tensors", dtype=dtypes.name(t.dtype), shape=[d.size for d in t.tensor_shape.dim],
            plugin_name=v.metadata.plugin_data.plugin_name,
            plugin_content=v.metadata.plugin_data.content or None, tensor=t.SerializeToString(),
            **key)


def _histogram_tensor(arr, key, buf):
    arr = np.asarray(arr, dtype=np.float64).reshape(-1, 3)
    counts = arr[:, 2]
    buf.add("histograms", num=float(counts.sum()),
            min=float(arr[0, 0]) if len(arr) else None,
            max=float(arr[-1, 1]) if len(arr) else None, sum=None, sum_squares=None,
            bucket_limits=arr[:, 1].tolist(), bucket_counts=counts.tolist(),
            bucket_lefts=arr[:, 0].tolist(), source="tensor", **key)


def _image_tensor(arr, v, key, buf):
    flat = arr.reshape(-1)
    width, height = int(flat[0]), int(flat[1])
    for i, data in enumerate(flat[2:]):
        buf.add("media", kind="image", index=i, content_type=image_content_type(data), data=data,
                width=width, height=height,
                plugin_content=v.metadata.plugin_data.content or None, **key)


def _audio_tensor(arr, v, key, buf):
    rows = arr.reshape(-1, arr.shape[-1] if arr.ndim > 1 else 1)
    for i, row in enumerate(rows):
        buf.add("media", kind="audio", index=i, content_type="audio/wav", data=row[0],
                plugin_content=v.metadata.plugin_data.content or None, **key)


def _text_tensor(arr, v, key, buf):
    if arr.ndim == 0:
        data, ctype = bytes(arr.item()), "text/plain"
    else:
        data = json.dumps(_strings(arr)).encode()
        ctype = "application/json"
    buf.add("media", kind="text", index=0, content_type=ctype, data=data,
            plugin_content=v.metadata.plugin_data.content or None, **key)


def _strings(arr):
    if not isinstance(arr, np.ndarray):   # an element of a 1-D object array: bytes
        return bytes(arr).decode("utf-8", "replace")
    if arr.ndim == 0:
        return bytes(arr.item()).decode("utf-8", "replace")
    return [_strings(a) for a in arr]


def _pr_curve_tensor(arr, v, key, buf):
    arr = np.asarray(arr, dtype=np.float64)
    data = {name: arr[i].tolist() for i, name in enumerate(_PR_ROWS)}
    buf.add("media", kind="pr_curve", index=0, content_type="application/json",
            data=json.dumps(data).encode(),
            plugin_content=v.metadata.plugin_data.content or None, **key)


def comparable_rows(table):
    """A table's rows with NaN made comparable and -0.0 told apart from 0.0 (to compare the
    decoder's rows with the oracle's)."""
    def norm(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else (v, math.copysign(1, v))
        return [norm(x) for x in v] if isinstance(v, list) else v
    return [{k: norm(v) for k, v in row.items()} for row in table.to_pylist()]
