"""A serialized tf.Summary -> typed rows, from the wire format alone (no TensorFlow, no protos).

The one summary decoder: SummaryHook, the tf.summary capture and `import-tfevents` all use it, with
or without TensorFlow. Every kind TensorFlow writes has its rows: simple_value and scalar tensors
-> scalars; `histo` and histogram-plugin tensors -> histograms; images, audio, text and pr-curves
-> media (bytes as written); any other tensor -> tensors (its TensorProto bytes as they were in the
Summary). The tests hold it to an independent decoder on TF's own protos (tests/summary_oracle.py).
A tag that is not UTF-8 is kept with its bad bytes escaped, with a warning; bytes that do not parse
are kept raw as a `tensors` row (plugin_name UNDECODABLE) and raised as WireFormatError once the
rest is recorded.

Summary.Value: tag 1, simple_value 2, obsolete_old_style_histogram 3, image 4, histo 5,
audio 6, node_name 7, tensor 8, metadata 9 (SummaryMetadata: plugin_data 1 {plugin_name 1,
content 2}).
"""

import json
import logging
import struct

import numpy as np

from ..errors import WireFormatError
from ..formats import dtypes, native, tensor_proto
from ..formats.wire import varint, walk
from .rows import ColumnBuffers

log = logging.getLogger("tfblackbox")

UNDECODABLE = "tfblackbox/undecodable"   # the recorder's name for the same rows
_PNG, _GIF, _JPEG = b"\x89PNG", b"GIF8", b"\xff\xd8\xff"
_PR_ROWS = ("tp", "fp", "tn", "fn", "precision", "recall")
_ONEOF = {2: "simple_value", 3: "obsolete_old_style_histogram", 4: "image", 5: "histo",
          6: "audio", 8: "tensor"}


def image_content_type(data):
    if data.startswith(_PNG):
        return "image/png"
    if data.startswith(_GIF):
        return "image/gif"
    if data.startswith(_JPEG):
        return "image/jpeg"
    return "application/octet-stream"


def decode_summary(serialized, step, wall_time, buffers, fast=True):
    """Appends the rows of one serialized Summary to `buffers`, value by value. Scalars
    (simple_value) and `histo` histograms, what tf.compat.v1.summary writes on every logging
    step, take a fast path first (SummaryHook decodes on the writer thread, which shares the
    GIL with training: 26 us a 7-value Summary against 44 us the general way); with the
    compiled decoder built (formats/native.py), its twin of that fast path runs first."""
    data = serialized if isinstance(serialized, bytes) else bytes(serialized)
    i, n, bad = 0, len(data), []
    nat = native.module() if fast and type(buffers) is ColumnBuffers else None
    while i < n:
        if nat is not None:   # the compiled fast path, up to a value it leaves to us
            i, rows = nat.summary_values(data, i, step, wall_time, buffers.columns("scalars"),
                                         buffers.columns("histograms"), buffers.attempt)
            buffers.rows += rows
            if i >= n:
                break
        try:
            number, wire, _f, start, end = next(walk(data, i))
        except WireFormatError as e:
            bad.append(_keep_undecodable(data[i:], "", step, wall_time, buffers,
                                         f"the Summary's bytes from offset {i} do not parse "
                                         f"({e})"))
            break
        if number != 1 or wire != 2:
            _keep_undecodable(data[i:end], "", step, wall_time, buffers,
                              f"unknown Summary field {number} (wire type {wire})")
        elif not (fast and _decode_value_fast(data, start, end, step, wall_time, buffers)):
            problem = _decode_value(data, start, end, step, wall_time, buffers)
            if problem:
                bad.append(problem)
        i = end
    if bad:
        raise WireFormatError("; ".join(bad))


class _Value:
    tag = b""
    which = None          # the oneof's field number (the last one present wins)
    span = None           # (start, end) of the oneof field's payload
    plugin_name = ""
    plugin_content = b""


def _parse_value(data, start, end):
    v = _Value()
    for number, wire, _f, payload, fend in walk(data, start, end):
        if number == 1 and wire == 2:
            v.tag = data[payload:fend]
        elif number in _ONEOF:
            v.which, v.span = number, (payload, fend)
        elif number == 9 and wire == 2:
            _merge_metadata(v, data, payload, fend)
    return v


def _merge_metadata(v, data, start, end):
    for number, wire, _f, payload, fend in walk(data, start, end):
        if number == 1 and wire == 2:
            for n, w, _g, p, e in walk(data, payload, fend):
                if n == 1 and w == 2:
                    v.plugin_name = data[p:e].decode("utf-8")
                elif n == 2 and w == 2:
                    v.plugin_content = data[p:e]


def _decode_value(data, start, end, step, wall_time, buffers):
    """Decodes one Value; returns a problem message, or None when it was kept whole."""
    try:
        v = _parse_value(data, start, end)
    except (WireFormatError, UnicodeDecodeError) as e:
        return _keep_undecodable(data[start:end], _tag_text(data, start, end), step, wall_time,
                                 buffers, f"a summary value does not parse ({e})")
    try:
        tag = v.tag.decode("utf-8")
    except UnicodeDecodeError:
        tag = v.tag.decode("utf-8", "backslashreplace")
        log.warning("tfblackbox: summary tag %r at step %s is not UTF-8; recorded with its "
                    "bad bytes escaped as %r", v.tag, step, tag)
    key = dict(step=step, wall_time=wall_time, tag=tag)
    try:
        _rows_of(v, data, key, buffers)
    except (WireFormatError, struct.error, IndexError) as e:
        return _keep_undecodable(data[start:end], tag, step, wall_time, buffers,
                                 f"summary value {tag!r} does not parse ({e})")
    return None


def _tag_text(data, start, end):
    try:
        for number, wire, _f, payload, fend in walk(data, start, end):
            if number == 1 and wire == 2:
                return data[payload:fend].decode("utf-8", "backslashreplace")
    except WireFormatError:
        pass
    return ""


def _keep_undecodable(raw, tag, step, wall_time, buffers, why):
    message = (f"step {step}: {why}; its {len(raw)} bytes are kept as a tensors row with "
               f"plugin_name {UNDECODABLE!r}")
    log.warning("tfblackbox: %s", message)
    buffers.add("tensors", step=step, wall_time=wall_time, tag=tag, dtype=None, shape=None,
                plugin_name=UNDECODABLE, plugin_content=bytes(raw), tensor=None)
    return message


def _rows_of(v, data, key, buf):
    which = v.which
    if which is None:   # an empty value: kept visible rather than lost
        buf.add("tensors", dtype=None, shape=None, plugin_name="", plugin_content=None,
                tensor=None, **key)
        return
    start, end = v.span
    if which == 2:
        buf.add("scalars", value=struct.unpack_from("<f", data, start)[0], **key)
    elif which == 5:
        buf.add("histograms", source="histo", **histo_fields(data, start, end), **key)
    elif which == 4:
        im = _ints(data, start, end, {1: "height", 2: "width", 3: "colorspace"}, 4)
        image = im.pop("bytes")
        buf.add("media", kind="image", index=0, content_type=image_content_type(image),
                data=image, width=im["width"], height=im["height"],
                colorspace=im["colorspace"], **key)
    elif which == 6:
        _audio(data, start, end, key, buf)
    elif which == 8:
        _decode_tensor(v, data, start, end, key, buf)
    else:   # obsolete_old_style_histogram: never written by TF >= 1.0; an empty tensor row
        _keep_tensor(v, tensor_proto.parse(b""), b"", key, buf)


def _ints(data, start, end, names, bytes_field):
    out = {name: 0 for name in names.values()}
    out["bytes"] = b""
    for number, wire, _f, payload, fend in walk(data, start, end):
        if number in names and wire == 0:
            out[names[number]] = _int32(varint(data, payload)[0])
        elif number == bytes_field and wire == 2:
            out["bytes"] = data[payload:fend]
    return out


def _int32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _audio(data, start, end, key, buf):
    a = {"sample_rate": 0.0, "num_channels": 0, "length_frames": 0, "data": b"",
         "content_type": ""}
    for number, wire, _f, payload, fend in walk(data, start, end):
        if number == 1 and wire == 5:
            a["sample_rate"] = struct.unpack_from("<f", data, payload)[0]
        elif number in (2, 3) and wire == 0:
            value = varint(data, payload)[0]
            a["num_channels" if number == 2 else "length_frames"] = (
                value - (1 << 64) if value >= 1 << 63 else value)
        elif number == 4 and wire == 2:
            a["data"] = data[payload:fend]
        elif number == 5 and wire == 2:
            a["content_type"] = data[payload:fend].decode("utf-8")
    buf.add("media", kind="audio", index=0, content_type=a["content_type"] or "audio/wav",
            data=a["data"], sample_rate=a["sample_rate"], num_channels=a["num_channels"],
            length_frames=a["length_frames"], **key)


_HISTO_SCALARS = {1: "min", 2: "max", 3: "num", 4: "sum", 5: "sum_squares"}
_HISTO_ARRAYS = {6: "bucket_limits", 7: "bucket_counts"}


def _decode_value_fast(data, i, end, step, wall, buf):
    """A Value holding just tag + simple_value or tag + histo (+ metadata, which those kinds
    ignore) in TF's packed layout; False, touching nothing, for anything else."""
    tag = simple = histo = None
    while i < end:
        key = data[i]
        if key == 0x0A or key == 0x2A or key == 0x4A:      # tag, histo, metadata (bytes)
            length, j = varint(data, i + 1)
            if key == 0x0A:
                tag = data[j:j + length]
            elif key == 0x2A:
                histo = (j, j + length)
            i = j + length
        elif key == 0x15:                                  # simple_value (2, fixed32)
            simple = struct.unpack_from("<f", data, i + 1)[0]
            i += 5
        else:
            return False
    if i != end or tag is None or (simple is None) == (histo is None):
        return False
    try:
        tag = tag.decode()
    except UnicodeDecodeError:
        return False
    if simple is not None:
        buf.add_scalar(step, wall, tag, simple)
        return True
    fields = _histo_packed(data, *histo)
    if fields is None:
        return False
    buf.add_histogram(step, wall, tag, fields)
    return True


def _histo_packed(data, i, n):
    """The fields of the HistogramProto in data[i:n] if it is in TF's packed layout, else
    None (histo_fields reads any layout)."""
    out = {"min": 0.0, "max": 0.0, "num": 0.0, "sum": 0.0, "sum_squares": 0.0,
           "bucket_limits": _EMPTY, "bucket_counts": _EMPTY}
    while i < n:
        tag = data[i]
        field, wire = tag >> 3, tag & 7
        if wire == 1 and field in _HISTO_SCALARS and i + 9 <= n:
            out[_HISTO_SCALARS[field]] = struct.unpack_from("<d", data, i + 1)[0]
            i += 9
        elif wire == 2 and field in _HISTO_ARRAYS:
            length, i = varint(data, i + 1)
            if length % 8 or i + length > n:
                return None
            out[_HISTO_ARRAYS[field]] = np.frombuffer(data, "<f8", length // 8, i)
            i += length
        else:
            return None
    return out if i == n else None


_EMPTY = np.zeros(0, dtype="<f8")


def histo_fields(data, start, end):
    """A HistogramProto's fields; packed bucket arrays straight from the bytes as numpy."""
    out = {name: 0.0 for name in _HISTO_SCALARS.values()}
    arrays = {name: [] for name in _HISTO_ARRAYS.values()}
    for number, wire, _f, payload, fend in walk(data, start, end):
        if number in _HISTO_SCALARS and wire == 1:
            out[_HISTO_SCALARS[number]] = struct.unpack_from("<d", data, payload)[0]
        elif number in _HISTO_ARRAYS and wire == 2:
            if (fend - payload) % 8:
                raise WireFormatError(f"histogram field {number} holds {fend - payload} bytes, "
                                      f"not a whole number of doubles")
            arrays[_HISTO_ARRAYS[number]].append(
                np.frombuffer(data, "<f8", (fend - payload) // 8, payload))
        elif number in _HISTO_ARRAYS and wire == 1:
            arrays[_HISTO_ARRAYS[number]].append(np.frombuffer(data, "<f8", 1, payload))
    for name, parts in arrays.items():
        out[name] = (parts[0] if len(parts) == 1 else
                     np.concatenate(parts) if parts else np.zeros(0, "<f8"))
    return out


def _decode_tensor(v, data, start, end, key, buf):
    t = tensor_proto.parse(data, start, end)
    plugin = v.plugin_name
    try:
        if plugin == "scalars" or (not plugin and not t.shape and not t.unknown_rank
                                   and t.dtype in tensor_proto.NUMERIC):
            buf.add("scalars", value=_float(tensor_proto.ndarray(t)), **key)
        elif plugin == "histograms":
            _histogram_tensor(tensor_proto.ndarray(t), key, buf)
        elif plugin == "images":
            _image_tensor(tensor_proto.ndarray(t), v, key, buf)
        elif plugin == "audio":
            _audio_tensor(tensor_proto.ndarray(t), v, key, buf)
        elif plugin == "text":
            _text_tensor(tensor_proto.ndarray(t), v, key, buf)
        elif plugin == "pr_curves":
            _pr_curve_tensor(tensor_proto.ndarray(t), v, key, buf)
        else:
            _keep_tensor(v, t, data[start:end], key, buf)
    except (ValueError, TypeError, IndexError):
        _keep_tensor(v, t, data[start:end], key, buf)   # unexpected for its plugin: raw


def _float(arr):
    if arr.size != 1:
        raise TypeError(f"a scalar summary holds {arr.size} values")
    return float(arr.reshape(()))


def _keep_tensor(v, t, raw, key, buf):
    buf.add("tensors", dtype=dtypes.name(t.dtype), shape=list(t.shape),
            plugin_name=v.plugin_name, plugin_content=v.plugin_content or None,
            tensor=bytes(raw), **key)


def _content(v):
    return v.plugin_content or None


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
        buf.add("media", kind="image", index=i, content_type=image_content_type(data),
                data=data, width=width, height=height, plugin_content=_content(v), **key)


def _audio_tensor(arr, v, key, buf):
    rows = arr.reshape(-1, arr.shape[-1] if arr.ndim > 1 else 1)
    for i, row in enumerate(rows):
        buf.add("media", kind="audio", index=i, content_type="audio/wav", data=row[0],
                plugin_content=_content(v), **key)


def _text_tensor(arr, v, key, buf):
    if arr.ndim == 0:
        data, ctype = bytes(arr.item()), "text/plain"
    else:
        data, ctype = json.dumps(_strings(arr)).encode(), "application/json"
    buf.add("media", kind="text", index=0, content_type=ctype, data=data,
            plugin_content=_content(v), **key)


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
            data=json.dumps(data).encode(), plugin_content=_content(v), **key)
