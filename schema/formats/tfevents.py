"""The Event fields of tfevents files that capture and export need, read from the wire format
(no TensorFlow): an Event's step, wall time and kind; each summary value's tag, plugin metadata
and tensor layout; and the byte spans of tensor payloads that decoded rows hold too.

Event: wall_time 1, step 2, file_version 3, graph_def 4, summary 5, log_message 6,
session_log 7, tagged_run_metadata 8, meta_graph_def 9, source_metadata 10.
Summary.Value: tag 1, simple_value 2, image 4, histo 5, audio 6, node_name 7, tensor 8,
metadata 9. TensorProto: dtype 1, tensor_shape 2 (dim 2: size 1), tensor_content 4, string_val 8.
"""

import dataclasses
import struct

from ..errors import WireFormatError
from . import tensor_proto
from .wire import encode_varint, signed64, text, varint
from .wire import walk_list as walk

EVENT_KINDS = {3: "file_version", 4: "graph_def", 5: "summary", 6: "log_message",
               7: "session_log", 8: "tagged_run_metadata", 9: "meta_graph_def",
               10: "source_metadata"}
VALUE_KINDS = {2: "simple_value", 3: "obsolete_old_style_histogram", 4: "image", 5: "histo",
               6: "audio", 8: "tensor"}
DT_DOUBLE, DT_STRING = 2, 7


class EventFormatError(WireFormatError):
    """Bytes that are not an Event (or Summary) in the protobuf wire format."""


@dataclasses.dataclass
class TensorInfo:
    dtype: int = 0
    shape: list = dataclasses.field(default_factory=list)
    content: tuple | None = None          # (start, end) of tensor_content's bytes
    strings: list = dataclasses.field(default_factory=list)   # (start, end) of each string_val
    other: bool = False            # any field beyond dtype, shape, content and string_val


@dataclasses.dataclass
class ValueInfo:
    start: int
    end: int
    tag: str = ""
    kind: str = ""                 # which of VALUE_KINDS, "" for none
    metadata: tuple | None = None         # (start, end) of the SummaryMetadata bytes, if present
    plugin_name: str = ""
    tensor: TensorInfo | None = None


@dataclasses.dataclass
class EventInfo:
    wall_time: float = 0.0
    step: int = 0
    what: str = "empty"
    summary: tuple | None = None          # (start, end) of the Summary bytes
    tag: str = ""                  # tagged_run_metadata's tag
    values: list = dataclasses.field(default_factory=list)   # ValueInfo of summary values


def parse_event(data):
    """EventInfo of one serialized Event, its summary values included."""
    ev = EventInfo()
    try:
        for number, wire, payload, end in walk(data):
            if number == 1 and wire == 1:
                ev.wall_time = struct.unpack_from("<d", data, payload)[0]
            elif number == 2 and wire == 0:
                ev.step = signed64(varint(data, payload)[0])
            elif number in EVENT_KINDS and wire == 2:
                if ev.what == "empty":   # the first Event holds file_version and source_metadata
                    ev.what = EVENT_KINDS[number]
                if number == 5:
                    ev.summary = (payload, end)
                    ev.values = parse_summary(data, payload, end)
                elif number == 8:
                    for n, w, p, e in walk(data, payload, end):
                        if n == 1 and w == 2:
                            ev.tag = text(data, p, e)
    except (WireFormatError, IndexError, struct.error) as e:
        raise EventFormatError(f"not a tfevents Event ({len(data)} bytes): {e}") from e
    return ev


def parse_summary(data, start, end):
    """[ValueInfo] of the Summary in data[start:end]."""
    values = []
    for number, wire, payload, vend in walk(data, start, end):
        if number == 1 and wire == 2:
            values.append(_value(data, payload, vend))
    return values


def _value(data, start, end):
    v = ValueInfo(start, end)
    for number, wire, payload, fend in walk(data, start, end):
        if number == 1 and wire == 2:
            v.tag = text(data, payload, fend)
        elif number == 9 and wire == 2:
            v.metadata = (payload, fend)
            md = data[payload:fend]   # a tag's metadata repeats: its plugin name is cached
            name = _PLUGINS.get(md)
            if name is None:
                name = plugin_name(md)
                if len(_PLUGINS) < 4096:
                    _PLUGINS[md] = name
            v.plugin_name = name
        elif number in VALUE_KINDS:
            v.kind = VALUE_KINDS[number]
            if number == 8 and wire == 2:
                v.tensor = _tensor(data, payload, fend)
    return v


def plugin_name(data, start=0, end=None):
    """The plugin_data.plugin_name of the SummaryMetadata in data[start:end]."""
    for number, wire, payload, fend in walk(data, start, end):
        if number == 1 and wire == 2:
            for n, w, p, e in walk(data, payload, fend):
                if n == 1 and w == 2:
                    return text(data, p, e)
    return ""


def _tensor(data, start, end):
    t = TensorInfo()
    for number, wire, payload, fend in walk(data, start, end):
        if number == 1 and wire == 0:
            t.dtype = varint(data, payload)[0]
        elif number == 2 and wire == 2:
            raw = data[payload:fend]
            shape = _SHAPES.get(raw)
            if shape is None:
                dims, unknown = tensor_proto.shape(raw, 0, len(raw))
                shape = (tuple(dims), unknown)
                if len(_SHAPES) < 4096:
                    _SHAPES[raw] = shape
            t.shape = list(shape[0])
            t.other = t.other or shape[1]
        elif number == 4 and wire == 2:
            t.content = (payload, fend)
        elif number == 8 and wire == 2:
            t.strings.append((payload, fend))
        elif number != 3:            # version_number is harmless; anything else is not
            t.other = True
    return t


_PLUGINS: dict[bytes, str] = {}   # SummaryMetadata bytes -> plugin name
_SHAPES: dict[bytes, tuple] = {}    # TensorShapeProto bytes -> (dims, unknown rank)


def with_metadata(data, values, metadata_of):
    """The Summary bytes of an Event with `metadata_of(value)` (serialized SummaryMetadata, or
    None) appended to each value that has none: TF1's FileWriter writes a tag's plugin metadata
    only on its first value in a file. Protobuf merges a field wherever it stands."""
    out = bytearray()
    for v in values:
        body = bytes(data[v.start:v.end])
        extra = metadata_of(v) if v.metadata is None else None
        if extra:
            body += b"\x4a" + encode_varint(len(extra)) + extra
        out += b"\x0a" + encode_varint(len(body)) + body
    return bytes(out)


# -- cuts: payload spans kept once, in the decoded rows ----------------------------------------

def cut(data, spans):
    """data without the (start, end) spans (sorted, disjoint)."""
    parts, pos = [], 0
    for start, end in spans:
        parts.append(data[pos:start])
        pos = end
    parts.append(data[pos:])
    return b"".join(parts)


def restore(stripped, cuts):
    """Inverse of `cut`: `cuts` are (position in the original data, payload bytes), ascending."""
    out, src = bytearray(), 0
    for at, payload in cuts:
        take = at - len(out)
        out += stripped[src:src + take]
        src += take
        out += payload
    out += stripped[src:]
    return bytes(out)
