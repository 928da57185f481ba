"""The few protobuf fields of tfdbg's Event, Summary and TensorProto messages that the dump
code needs, read and written with a small wire-format codec so replay needs no TensorFlow."""

import re
import struct

from .errors import BlackboxError

class DumpLayoutError(BlackboxError):
    """A dump directory or a stored name that does not fit the tfdbg layout."""


# DataType enum values -> numpy-style names (as tf.DType.name gives them)
DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
          7: "string", 8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8",
          13: "qint32", 14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16",
          18: "complex128", 19: "float16", 20: "resource", 21: "variant", 22: "uint32",
          23: "uint64"}


def varint(buf, i):
    """(value, next index) of the base-128 varint at buf[i] (also used by the summary decoder)."""
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def walk(buf, start=0, end=None):
    """Yields (field number, wire type, field start, payload start, field end) for each field
    of the message in buf[start:end], in place. No slices: dump Events carry the whole tensor,
    and copying it at each nesting level was most of the cost."""
    i, n = start, len(buf) if end is None else end
    while i < n:
        field = i
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        payload = i
        if wire == 0:
            _v, i = varint(buf, i)
        elif wire == 2:
            size, payload = varint(buf, i)
            i = payload + size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise DumpLayoutError(f"unsupported protobuf wire type {wire}")
        if i > n:
            raise DumpLayoutError("truncated protobuf message")
        yield number, wire, field, payload, i


def fields(buf):
    """Yields (field_number, wire_type, value) of one message; value is int or bytes."""
    for number, wire, _f, payload, end in walk(buf):
        yield number, wire, varint(buf, payload)[0] if wire == 0 else buf[payload:end]


def _first(buf, number):
    for num, _wire, value in fields(buf):
        if num == number:
            return value
    return None


def _field(buf, start, end, number):
    """The (start, end) span of the first length-delimited field `number` in buf[start:end].
    walk() inlined: this runs three times for every dumped tensor, and the generator made
    tensor_info ~40% slower."""
    i = start
    while i < end:
        key, i = varint(buf, i)
        wire = key & 7
        if wire == 2:
            size, i = varint(buf, i)
            if key >> 3 == number:
                if i + size > end:
                    raise DumpLayoutError("truncated protobuf message")
                return i, i + size
            i += size
        elif wire == 0:
            _v, i = varint(buf, i)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise DumpLayoutError(f"unsupported protobuf wire type {wire}")
    return None


def dtype_name(enum):
    """numpy-style name of a DataType enum value; reference types get "_ref"."""
    name = DTYPES.get(enum % 100, f"dtype{enum % 100}")
    return name + "_ref" if enum > 100 else name


def tensor_info(event_bytes):
    """(dtype name, shape list) of the tensor in a dump Event (summary.value[0].tensor)."""
    buf = event_bytes
    span = _field(buf, 0, len(buf), 5)                        # Event.summary
    span = span and _field(buf, span[0], span[1], 1)          # Summary.value[0]
    span = span and _field(buf, span[0], span[1], 8)          # Value.tensor
    if not span:
        return None, None
    dtype, shape = 0, []
    for number, wire, _f, payload, end in walk(buf, *span):
        if number == 1 and wire == 0:
            dtype = varint(buf, payload)[0]
        elif number == 2 and wire == 2:                       # TensorShapeProto
            for dnum, _dw, dim in fields(buf[payload:end]):
                if dnum == 2:
                    size_ = _first(dim, 1) or 0
                    shape.append(size_ - (1 << 64) if size_ >= 1 << 63 else size_)
    return dtype_name(dtype), shape


def graph_event_parts(event_bytes):
    """(wall_time, GraphDef bytes) of a partition-graph Event."""
    wall, graph = 0.0, b""
    for num, wire, v in fields(event_bytes):
        if num == 1 and wire == 1:
            wall = struct.unpack("<d", v)[0]
        elif num == 4 and wire == 2:
            graph = bytes(v)
    return wall, graph


def _encode_varint(value):
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def graph_event(wall_time, graph_def):
    """The Event bytes TF writes for a partition graph: wall_time (1), graph_def (4)."""
    out = b"\x09" + struct.pack("<d", wall_time) if wall_time else b""
    return out + b"\x22" + _encode_varint(len(graph_def)) + graph_def


def log_message_event(message):
    """Event(log_message=LogMessage(message=...)): the fetches / feed-keys info files."""
    msg = message.encode("utf-8")
    inner = b"\x12" + _encode_varint(len(msg)) + msg if msg else b""
    return b"\x32" + _encode_varint(len(inner)) + inner


def graph_node_devices(graph_def):
    """The device strings assigned to the nodes of a serialized GraphDef."""
    devices = set()
    for num, _w, node in fields(graph_def):
        if num == 1:
            dev = _first(node, 4)
            if dev:
                devices.add(bytes(dev).decode("utf-8", "replace"))
    return devices


def with_global_step(event_bytes, step):
    """The core-metadata Event with its JSON `global_step` set to `step`; every other byte as
    TF wrote it. (MonitoredSession drops RunOptions.debug_options.global_step when it merges
    hooks' options, so TF always writes 0 there.)"""
    out = bytearray()
    for number, wire, start, payload, end in walk(event_bytes):
        if number != 6 or wire != 2:
            out += event_bytes[start:end]
            continue
        inner = bytearray()
        lm = event_bytes[payload:end]
        for n2, w2, s2, p2, e2 in walk(lm):
            if n2 == 2 and w2 == 2:
                msg = bytes(lm[p2:e2]).decode("utf-8")
                msg = re.sub(r'"global_step":\s*-?\d+', f'"global_step":{int(step)}', msg,
                             count=1).encode("utf-8")
                inner += b"\x12" + _encode_varint(len(msg)) + msg
            else:
                inner += lm[s2:e2]
        out += b"\x32" + _encode_varint(len(inner)) + inner
    return bytes(out)


def log_message(event_bytes):
    lm = _first(event_bytes, 6)
    msg = _first(lm, 2) if lm is not None else None
    return None if msg is None else bytes(msg).decode("utf-8", "replace")
