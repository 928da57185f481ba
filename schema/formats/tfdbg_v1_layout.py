"""The tfdbg dump-directory layout that `DebugDumpDir` reads, without TensorFlow.

One `run_<micros>_<n>/` per session.run holds `_tfdbg_core_metadata_sessionrun%014d_<micros>`,
`_tfdbg_fetches_info_`, `_tfdbg_feed_keys_info_` and one `_tfdbg_device_<...>` directory per
device with the partition graph `_tfdbg_graph_hash<hash>_<micros>` and one dump file
`<node>_<slot>_<debug_op>_<micros>[-k]` per tensor (node-name slashes become directories).
Every file is one serialized `Event`. This module parses such a directory into plain values
and turns stored values back into safe relative paths; the protobuf fields it needs are read
and written by tfdbg_v1.py, so the replay side does not need TensorFlow.
"""

import dataclasses
import os
import re

from ..errors import DumpLayoutError
from .tfdbg_v1 import graph_node_devices

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

# slots: a step of DumpHook makes and drops one a watched tensor (2 509 at tools/bench_dump's
# largest graph); without a __dict__ each, dropping a step's took ~1 ms instead of ~5 (in the
# ingest, measured beside parse_records)
@dataclasses.dataclass(slots=True)
class TensorFile:
    device_dir: str
    node_name: str
    output_slot: int
    debug_op: str
    timestamp: int
    ext_timestamp: str
    data: bytes
    # known without parsing `data` when the tensor comes from the in-memory capture
    device_name: str | None = None
    dtype: str | None = None
    shape: tuple | list | None = None   # the capture's: a tuple (the collector untracks it)
    content: tuple | None = None   # (start, end) of tensor_content's payload in data when known
                                   # ((0, 0): there is none)


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


def read_file(path):
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
            out.core_metadata_name, out.core_metadata = entry, read_file(full)
        elif entry == FETCHES_INFO:
            out.fetches_info = read_file(full)
        elif entry == FEED_KEYS_INFO:
            out.feed_keys_info = read_file(full)
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
                out.graphs.append(GraphFile(dev, m.group(1), int(m.group(2)), read_file(full)))
            else:
                try:
                    base, slot, op, ts, ext = parse_dump_file_name(name)
                except DumpLayoutError:
                    out.unknown.append(full)
                    continue
                out.tensors.append(TensorFile(dev, prefix + base, slot, op, ts, ext,
                                              read_file(full)))
            if remove:
                os.remove(full)
