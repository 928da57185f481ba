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


def with_global_step(event_bytes, step, drop_outputs=None):
    """The core-metadata Event with its JSON `global_step` set to `step` and, with
    `drop_outputs`, the output names under that name scope left out; every other byte as TF
    wrote it. (MonitoredSession drops RunOptions.debug_options.global_step when it merges
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
                             count=1)
                if drop_outputs:
                    msg = _without_outputs(msg, drop_outputs)
                msg = msg.encode("utf-8")
                inner += b"\x12" + encode_varint(len(msg)) + msg
            else:
                inner += lm[s2:e2]
        out += b"\x32" + encode_varint(len(inner)) + inner
    return bytes(out)


def _without_outputs(msg, scope):
    m = re.search(r'"output_names":\[([^\]]*)\]', msg)
    if not m:
        return msg
    names = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))
    kept = [n for n in names if not n.startswith(scope)]
    if len(kept) == len(names):
        return msg
    return (msg[:m.start()] + '"output_names":[' + ",".join(f'"{n}"' for n in kept) + "]" +
            msg[m.end():])


# Names TF gives the nodes it adds for a node of a partition graph: the debugger's copy and
# debug ops, and the fetch's _Retval.
_DERIVED = ("__copy_", "__dbg_", "_retval_")


def without_scope(graph_def, scope):
    """The serialized GraphDef without the nodes in name scope `scope`, the nodes TF derived
    from them (copy, debug, fetch), and every input that names one of those. Nodes left
    untouched keep their bytes."""
    def own(name):
        return name.startswith(scope) or any(name.startswith(p + scope) for p in _DERIVED)

    out = bytearray()
    for number, wire, start, payload, end in walk(graph_def):
        if number != 1 or wire != 2:
            out += graph_def[start:end]
            continue
        node = graph_def[payload:end]
        name = first(node, 1)
        if name is not None and own(bytes(name).decode("utf-8", "replace")):
            continue
        kept, dropped = bytearray(), False
        for n2, w2, s2, p2, e2 in walk(node):
            if n2 == 3 and w2 == 2 and own(bytes(node[p2:e2]).decode(
                    "utf-8", "replace").lstrip("^")):
                dropped = True
                continue
            kept += node[s2:e2]
        body = bytes(kept) if dropped else bytes(node)
        out += b"\x0a" + encode_varint(len(body)) + body
    return bytes(out)


def log_message(event_bytes):
    lm = first(event_bytes, 6)
    msg = first(lm, 2) if lm is not None else None
    return None if msg is None else bytes(msg).decode("utf-8", "replace")
