"""tfdbg v2's DebugEvent files (`tf.debugging.experimental.enable_dump_debug_info`), read from
the wire (no TensorFlow): the file names of a dump root, and the DebugEvent fields the store
keeps as columns.

A dump root holds one file set per process (and host): `tfdbg_events.<seconds>.<host>.<kind>`
for the six kinds below, each a TFRecord file of DebugEvent protos. The `.metadata` file's
first record carries the tfdbg run id; TF's DebugDataReader reads one run per dump root.

DebugEvent: wall_time 1 (double), step 2, debug_metadata 3, source_file 4,
stack_frame_with_id 6, graph_op_creation 7, debugged_graph 8, execution 9,
graph_execution_trace 10, graph_id 11, debugged_device 12.
DebugMetadata: tensorflow_version 1, file_version 2, tfdbg_run_id 3.
SourceFile: file_path 1, host_name 2, lines 3 (repeated).
GraphOpCreation: op_type 1, op_name 2, graph_name 3, graph_id 4.
DebuggedGraph: graph_id 1, graph_name 2.
Execution: op_type 1, graph_id 3, tensor_debug_mode 6, tensor_protos 7 (repeated).
GraphExecutionTrace: tfdbg_context_id 1, op_name 2, output_slot 3, tensor_debug_mode 4,
tensor_proto 5. TensorProto: dtype 1, tensor_content 4, float_val 5, double_val 6.
"""

import dataclasses
import re
import struct

import numpy as np

from ..errors import WireFormatError
from .wire import text, varint
from .wire import walk_list as walk

KINDS = ("metadata", "source_files", "stack_frames", "graphs", "execution",
         "graph_execution_traces")
EXECUTION_KINDS = ("execution", "graph_execution_traces")   # TF's circular buffers
FILE_RE = re.compile(r"^tfdbg_events\.(\d+)\.(.+)\.(" + "|".join(KINDS) + r")$")

WHAT = {3: "debug_metadata", 4: "source_file", 6: "stack_frame_with_id",
        7: "graph_op_creation", 8: "debugged_graph", 9: "execution",
        10: "graph_execution_trace", 11: "graph_id", 12: "debugged_device"}
MODES = {0: "UNSPECIFIED", 1: "NO_TENSOR", 2: "CURT_HEALTH", 3: "CONCISE_HEALTH",
         4: "FULL_HEALTH", 5: "SHAPE", 6: "FULL_NUMERICS", 7: "FULL_TENSOR",
         8: "REDUCE_INF_NAN_THREE_SLOTS"}
# Where a health mode's summary tensor ([tensor id, ...]) counts NaN and +-Inf elements;
# CURT_HEALTH holds one flag (1: some element is NaN or +-Inf). SHAPE counts none.
NONFINITE_SLOTS = {"CURT_HEALTH": slice(1, 2), "CONCISE_HEALTH": slice(2, 5),
                   "FULL_HEALTH": slice(5, 8)}
SUMMARY_MODES = ("CURT_HEALTH", "CONCISE_HEALTH", "FULL_HEALTH", "SHAPE")
MAX_VALUES = 64          # longer debug tensors (FULL_TENSOR) stay in the record only
DT_FLOAT, DT_DOUBLE = 1, 2


@dataclasses.dataclass(frozen=True)
class FileName:
    name: str             # tfdbg_events.<seconds>.<host>.<kind>
    file_set: str         # the name without its kind: one process's six files share it
    host: str
    kind: str


def parse_name(name):
    """FileName of a tfdbg v2 file name, or None when it is not one."""
    m = FILE_RE.match(name)
    if not m:
        return None
    return FileName(name, name[:-len(m.group(3)) - 1], m.group(2), m.group(3))


@dataclasses.dataclass
class EventInfo:
    wall_time: float = 0.0
    what: str = ""
    tfdbg_run_id: str | None = None
    op_type: str | None = None
    op_name: str | None = None
    graph_id: str | None = None
    output_slot: int | None = None
    tensor_debug_mode: str | None = None
    values: list | None = None          # a health / SHAPE mode's summary values, all outputs
    nonfinite: int | None = None        # NaN and +-Inf elements those values count
    file_path: str | None = None        # source_file
    lines: tuple | None = None          # (start, end) of a source_file's lines in the record


def parse_event(data):
    """EventInfo of one serialized DebugEvent; WireFormatError if it is not one."""
    ev = EventInfo()
    try:
        for number, wire, payload, end in walk(data):
            if number == 1 and wire == 1:
                ev.wall_time = struct.unpack_from("<d", data, payload)[0]
            elif number in WHAT and wire == 2:
                ev.what = WHAT[number]
                _PARSERS.get(number, _skip)(ev, data, payload, end)
    except (WireFormatError, IndexError, struct.error) as e:
        raise WireFormatError(f"not a tfdbg DebugEvent ({len(data)} bytes): {e}") from e
    return ev


def _skip(ev, data, start, end):
    pass


def _metadata(ev, data, start, end):
    for n, w, p, e in walk(data, start, end):
        if n == 3 and w == 2:
            ev.tfdbg_run_id = text(data, p, e)


def _source_file(ev, data, start, end):
    """file_path, and where the lines start: a source file's bulk, cut out as a blob from
    there to the end of the SourceFile (fields are serialized in number order, `lines` is
    the last; whatever the span holds goes back verbatim, so the cut is lossless anyway).
    Walking each of thousands of lines cost 170 ms a Keras dump; this stops at the first."""
    i = start
    while i < end:
        key, p = varint(data, i)
        number, wire = key >> 3, key & 7
        if wire != 2:
            return   # not the SourceFile TF writes: kept whole
        size, p = varint(data, p)
        if number == 3:
            ev.lines = (i, end)
            return
        if number == 1:
            ev.file_path = text(data, p, p + size)
        i = p + size


def _op_creation(ev, data, start, end):
    for n, w, p, e in walk(data, start, end):
        if w != 2:
            continue
        if n == 1:
            ev.op_type = text(data, p, e)
        elif n == 2:
            ev.op_name = text(data, p, e)
        elif n == 4:
            ev.graph_id = text(data, p, e)


def _debugged_graph(ev, data, start, end):
    for n, w, p, e in walk(data, start, end):
        if n == 1 and w == 2:
            ev.graph_id = text(data, p, e)
        elif n == 2 and w == 2:
            ev.op_name = text(data, p, e)   # the graph's name


def _execution(ev, data, start, end):
    tensors = []
    for n, w, p, e in walk(data, start, end):
        if n == 1 and w == 2:
            ev.op_type = text(data, p, e)
        elif n == 3 and w == 2:
            ev.graph_id = text(data, p, e)
        elif n == 6 and w == 0:
            ev.tensor_debug_mode = MODES.get(varint(data, p)[0], "UNSPECIFIED")
        elif n == 7 and w == 2:
            tensors.append((p, e))
    _summaries(ev, data, tensors)


def _trace(ev, data, start, end):
    tensors = []
    ev.output_slot = 0
    for n, w, p, e in walk(data, start, end):
        if n == 1 and w == 2:
            ev.graph_id = text(data, p, e)
        elif n == 2 and w == 2:
            ev.op_name = text(data, p, e)
        elif n == 3 and w == 0:
            ev.output_slot = varint(data, p)[0]
        elif n == 4 and w == 0:
            ev.tensor_debug_mode = MODES.get(varint(data, p)[0], "UNSPECIFIED")
        elif n == 5 and w == 2:
            tensors.append((p, e))
    _summaries(ev, data, tensors)


def _summaries(ev, data, tensors):
    """The health / SHAPE summary values of the debug tensors (one per output)."""
    if ev.tensor_debug_mode not in SUMMARY_MODES or not tensors:
        return
    values, bad = [], 0
    slots = NONFINITE_SLOTS.get(ev.tensor_debug_mode)
    for p, e in tensors:
        vals = tensor_values(data, p, e)
        if vals is None:
            return
        values.extend(vals)
        if slots is not None:
            bad += int(sum(v for v in vals[slots] if v == v))
    if len(values) <= MAX_VALUES * len(tensors):
        ev.values = values
    ev.nonfinite = bad if slots is not None else None


def tensor_values(data, start, end):
    """The values of a float32/float64 TensorProto in data[start:end] as a list of floats, or
    None for another dtype."""
    dtype, content, floats, doubles = 0, None, [], []
    for n, w, p, e in walk(data, start, end):
        if n == 1 and w == 0:
            dtype = varint(data, p)[0]
        elif n == 4 and w == 2:
            content = bytes(data[p:e])
        elif n == 5:
            floats.append(data[p:e] if w == 2 else data[p:p + 4])
        elif n == 6:
            doubles.append(data[p:e] if w == 1 or w == 2 else b"")
    if dtype == DT_FLOAT:
        raw, typ = content if content is not None else b"".join(map(bytes, floats)), "<f4"
    elif dtype == DT_DOUBLE:
        raw, typ = content if content is not None else b"".join(map(bytes, doubles)), "<f8"
    else:
        return None
    return np.frombuffer(raw, typ).astype(float).tolist()


_PARSERS = {3: _metadata, 4: _source_file, 7: _op_creation, 8: _debugged_graph,
            9: _execution, 10: _trace}
