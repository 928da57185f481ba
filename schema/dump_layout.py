"""The tfdbg dump-directory layout that `DebugDumpDir` reads, without TensorFlow.

One `run_<micros>_<n>/` per session.run holds `_tfdbg_core_metadata_sessionrun%014d_<micros>`,
`_tfdbg_fetches_info_`, `_tfdbg_feed_keys_info_` and one `_tfdbg_device_<...>` directory per
device with the partition graph `_tfdbg_graph_hash<hash>_<micros>` and one dump file
`<node>_<slot>_<debug_op>_<micros>[-k]` per tensor (node-name slashes become directories).
Every file is one serialized `Event`. This module parses such a directory into plain values
and turns stored values back into safe relative paths; the few protobuf fields it needs are
read with a small wire-format decoder so the replay side does not need TensorFlow.
"""

import dataclasses
import os
import re
import struct

from .errors import BlackboxError

PREFIX = "_tfdbg_"
DEVICE_PREFIX = PREFIX + "device_"
GRAPH_PREFIX = PREFIX + "graph_"
CORE_METADATA_PREFIX = PREFIX + "core_metadata_"
FETCHES_INFO = PREFIX + "fetches_info_"
FEED_KEYS_INFO = PREFIX + "feed_keys_info_"

RUN_DIR_RE = re.compile(r"^run_(\d+)_(\d+)$")
CORE_METADATA_RE = re.compile(r"^_tfdbg_core_metadata_sessionrun\d{14}_\d+$")
GRAPH_FILE_RE = re.compile(r"^_tfdbg_graph_hash(\d+)_(\d+)$")
DEBUG_OP_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
EXT_TS_RE = re.compile(r"^(\d+)(-\d+)?$")

# DataType enum values -> numpy-style names (as tf.DType.name gives them)
DTYPES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8",
          7: "string", 8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8",
          13: "qint32", 14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16",
          18: "complex128", 19: "float16", 20: "resource", 21: "variant", 22: "uint32",
          23: "uint64"}


class DumpLayoutError(BlackboxError):
    """A dump directory or a stored name that does not fit the tfdbg layout."""


# -- protobuf wire format: just what we need ------------------------------------------------------

def _varint(buf, i):
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def fields(buf):
    """Yields (field_number, wire_type, value) of one message; value is int, bytes or float."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise DumpLayoutError(f"unsupported protobuf wire type {wire}")
        if i > n:
            raise DumpLayoutError("truncated protobuf message")
        yield number, wire, value


def _first(buf, number):
    for num, _wire, value in fields(buf):
        if num == number:
            return value
    return None


def _field(buf, start, end, number):
    """(payload start, payload end) of the first length-delimited field `number` in
    buf[start:end], found by skipping the others in place (no slices: dump Events carry
    the whole tensor, and copying it at each nesting level was most of the cost)."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 2:
            size, i = _varint(buf, i)
            if key >> 3 == number:
                if i + size > end:
                    raise DumpLayoutError("truncated protobuf message")
                return i, i + size
            i += size
        elif wire == 0:
            _v, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
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
    i, end = span
    while i < end:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            if number == 1:
                dtype = value
        elif wire == 2:
            size, i = _varint(buf, i)
            if number == 2:                                   # TensorShapeProto
                for dnum, _dw, dim in fields(buf[i:i + size]):
                    if dnum == 2:
                        size_ = _first(dim, 1) or 0
                        shape.append(size_ - (1 << 64) if size_ >= 1 << 63 else size_)
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise DumpLayoutError(f"unsupported protobuf wire type {wire}")
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


def _spans(buf):
    """(field number, wire type, start, end of the whole field, start of its payload)."""
    i, n = 0, len(buf)
    while i < n:
        start = i
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _v, i = _varint(buf, i)
            payload = start
        elif wire == 2:
            size, payload = _varint(buf, i)
            i = payload + size
        elif wire in (1, 5):
            payload, i = i, i + (8 if wire == 1 else 4)
        else:
            raise DumpLayoutError(f"unsupported protobuf wire type {wire}")
        yield number, wire, start, i, payload


def with_global_step(event_bytes, step):
    """The core-metadata Event with its JSON `global_step` set to `step`; every other byte as
    TF wrote it. (MonitoredSession drops RunOptions.debug_options.global_step when it merges
    hooks' options, so TF always writes 0 there.)"""
    out = bytearray()
    for number, wire, start, end, payload in _spans(event_bytes):
        if number != 6 or wire != 2:
            out += event_bytes[start:end]
            continue
        inner = bytearray()
        lm = event_bytes[payload:end]
        for n2, w2, s2, e2, p2 in _spans(lm):
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


# -- names and paths ------------------------------------------------------------------------------

def device_dir(device_name):
    """tfdbg's device directory name: ':' -> '_', '/' -> ','."""
    items = [item.replace(":", "_") for item in device_name.split("/")]
    name = DEVICE_PREFIX + ",".join(items)
    if "\x00" in name or os.sep in name or (os.altsep and os.altsep in name):
        raise DumpLayoutError(f"device name {device_name!r} cannot be a directory name")
    return name


def device_name_from_dir(dirname):
    items = dirname[len(DEVICE_PREFIX):].split(",")
    return "/".join(i.replace("device_", "device:").replace("_", ":", 1) for i in items)


def real_device_names(device_dirs, graph_defs):
    """{device dir: device name}: the true name from a partition graph's node devices where one
    maps to the dir (the dir -> name rule of tfdbg mangles e.g. XLA_CPU), else tfdbg's rule."""
    names = {d: device_name_from_dir(d) for d in device_dirs}
    for graph_def in graph_defs:
        for dev in graph_node_devices(graph_def):
            try:
                d = device_dir(dev)
            except DumpLayoutError:
                continue
            if d in names:
                names[d] = dev
    return names


def _check_part(part, what, value):
    if (not part or part in (".", "..") or "\x00" in part or "\\" in part
            or len(part.encode("utf-8", "surrogatepass")) > 255):
        raise DumpLayoutError(f"{what} {value!r} has an unsafe path part {part!r}; not written")


def dump_file_rel_path(node_name, output_slot, debug_op, ext_timestamp):
    """Relative path of one dump file inside its device dir; refuses names that would leave it
    (empty, '.', '..' parts, absolute names, NUL, over-long parts)."""
    if not DEBUG_OP_RE.match(debug_op or ""):
        raise DumpLayoutError(f"debug op {debug_op!r} of node {node_name!r} is not a valid name")
    if not EXT_TS_RE.match(ext_timestamp or ""):
        raise DumpLayoutError(f"timestamp {ext_timestamp!r} of node {node_name!r} is not valid")
    parts = node_name.split("/")
    for part in parts:
        _check_part(part, "node name", node_name)
    base = f"{parts[-1]}_{int(output_slot)}_{debug_op}_{ext_timestamp}"
    _check_part(base, "node name", node_name)
    return "/".join(parts[:-1] + [base])


def run_dir_name(micros, n):
    return f"run_{int(micros)}_{int(n)}"


def inside(root, path):
    """True when `path` resolves inside directory `root` (symlinks followed)."""
    root = os.path.realpath(root)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


# -- reading a dump dir ---------------------------------------------------------------------------

@dataclasses.dataclass
class TensorFile:
    device_dir: str
    node_name: str
    output_slot: int
    debug_op: str
    timestamp: int
    ext_timestamp: str
    data: bytes


@dataclasses.dataclass
class GraphFile:
    device_dir: str
    graph_hash: str
    timestamp: int
    data: bytes


@dataclasses.dataclass
class DumpDir:
    core_metadata_name: str | None = None
    core_metadata: bytes | None = None
    fetches_info: bytes | None = None
    feed_keys_info: bytes | None = None
    device_dirs: list = dataclasses.field(default_factory=list)
    graphs: list = dataclasses.field(default_factory=list)
    tensors: list = dataclasses.field(default_factory=list)
    unknown: list = dataclasses.field(default_factory=list)   # paths that fit no rule


def _read(path):
    # os.read of the known size: a third of the cost of open().read() for these small files
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size)
        while len(data) < size:             # a short read (not seen on local files)
            more = os.read(fd, size - len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


def parse_dump_file_name(base):
    """(node base name, slot, debug op, timestamp, extended timestamp) of a dump file name."""
    parts = base.split("_")
    if len(parts) < 4:
        raise DumpLayoutError(f"dump file name {base!r} does not fit <node>_<slot>_<op>_<micros>")
    ext = parts[-1]
    m = EXT_TS_RE.match(ext)
    if not m or not parts[-3].isdigit():
        raise DumpLayoutError(f"dump file name {base!r} does not fit <node>_<slot>_<op>_<micros>")
    return "_".join(parts[:-3]), int(parts[-3]), parts[-2], int(m.group(1)), ext


def read_dump_dir(path, remove=False):
    """Parses one run dir (or a DumpHook staging batch). With `remove`, deletes each file
    after reading it, leaving the (empty) directories (the recorder's staging area reuses
    them: TF would otherwise re-create every node-name directory on each run)."""
    out = DumpDir()
    with os.scandir(path) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        entry, full = e.name, e.path
        if entry.startswith(DEVICE_PREFIX) and e.is_dir(follow_symlinks=False):
            out.device_dirs.append(entry)
            _read_device_dir(out, entry, full, "", remove)
            continue
        if entry.startswith(CORE_METADATA_PREFIX) and CORE_METADATA_RE.match(entry):
            out.core_metadata_name, out.core_metadata = entry, _read(full)
        elif entry == FETCHES_INFO:
            out.fetches_info = _read(full)
        elif entry == FEED_KEYS_INFO:
            out.feed_keys_info = _read(full)
        else:
            out.unknown.append(full)
            continue
        if remove:
            os.remove(full)
    return out


def _read_device_dir(out, dev, folder, prefix, remove):
    with os.scandir(folder) as it:
        for e in it:
            name, full = e.name, e.path
            if e.is_dir(follow_symlinks=False):
                _read_device_dir(out, dev, full, prefix + name + "/", remove)
                continue
            if not e.is_file(follow_symlinks=False):   # TF writes no links, fifos, ...
                out.unknown.append(full)
                continue
            m = GRAPH_FILE_RE.match(name) if name.startswith(GRAPH_PREFIX) else None
            if m and not prefix:
                out.graphs.append(GraphFile(dev, m.group(1), int(m.group(2)), _read(full)))
            else:
                try:
                    base, slot, op, ts, ext = parse_dump_file_name(name)
                except DumpLayoutError:
                    out.unknown.append(full)
                    continue
                out.tensors.append(TensorFile(dev, prefix + base, slot, op, ts, ext, _read(full)))
            if remove:
                os.remove(full)
