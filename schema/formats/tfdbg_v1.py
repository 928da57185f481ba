"""The few fields of tfdbg v1's Event, Summary, TensorProto and GraphDef messages that the
dump code needs, read and written with the wire codec so the replay needs no TensorFlow."""

import re
import struct

from . import dtypes
from .wire import encode_varint, fields, first, span, varint, walk


def tensor_info(event_bytes):
    """(dtype name, shape list) of the tensor in a dump Event (summary.value[0].tensor)."""
    buf = event_bytes
    at = span(buf, 0, len(buf), 5)                          # Event.summary
    at = at and span(buf, at[0], at[1], 1)                  # Summary.value[0]
    at = at and span(buf, at[0], at[1], 8)                  # Value.tensor
    if not at:
        return None, None
    dtype, shape = 0, []
    for number, wire, _f, payload, end in walk(buf, *at):
        if number == 1 and wire == 0:
            dtype = varint(buf, payload)[0]
        elif number == 2 and wire == 2:                       # TensorShapeProto
            for dnum, _dw, dim in fields(buf[payload:end]):
                if dnum == 2:
                    size_ = first(dim, 1) or 0
                    shape.append(size_ - (1 << 64) if size_ >= 1 << 63 else size_)
    return dtypes.name(dtype), shape


def graph_event_parts(event_bytes):
    """(wall_time, GraphDef bytes) of a partition-graph Event."""
    wall, graph = 0.0, b""
    for num, wire, v in fields(event_bytes):
        if num == 1 and wire == 1:
            wall = struct.unpack("<d", v)[0]
        elif num == 4 and wire == 2:
            graph = bytes(v)
    return wall, graph


def graph_event(wall_time, graph_def):
    """The Event bytes TF writes for a partition graph: wall_time (1), graph_def (4)."""
    out = b"\x09" + struct.pack("<d", wall_time) if wall_time else b""
    return out + b"\x22" + encode_varint(len(graph_def)) + graph_def


def log_message_event(message):
    """Event(log_message=LogMessage(message=...)): the fetches / feed-keys info files."""
    msg = message.encode("utf-8")
    inner = b"\x12" + encode_varint(len(msg)) + msg if msg else b""
    return b"\x32" + encode_varint(len(inner)) + inner


def graph_node_devices(graph_def):
    """The device strings assigned to the nodes of a serialized GraphDef."""
    devices = set()
    for num, _w, node in fields(graph_def):
        if num == 1:
            dev = first(node, 4)
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
                inner += b"\x12" + encode_varint(len(msg)) + msg
            else:
                inner += lm[s2:e2]
        out += b"\x32" + encode_varint(len(inner)) + inner
    return bytes(out)


def log_message(event_bytes):
    lm = first(event_bytes, 6)
    msg = first(lm, 2) if lm is not None else None
    return None if msg is None else bytes(msg).decode("utf-8", "replace")
