"""Helpers for the tfdbg v2 tests: run tests/tfdbg_v2_script.py as a child, read a dump root
the two ways (its files record by record, and TF's DebugDataReader), and compare two dump
roots written by different processes with what cannot be the same taken out.

What differs between two processes that run the same training: the tfdbg run id, every wall
time, the file names (they carry the second the writer started), and the ids TF makes with
uuid4: graph (context) ids and stack frame ids. `normalized` replaces the ids by their order
of first appearance and zeroes the wall times; everything else must be equal.
"""

import collections
import glob
import os
import subprocess
import sys

from file_trees import files_under
from helpers import child_env

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "tfdbg_v2_script.py")




def run_script(*args, timeout=300, check=True, **env):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=child_env(**env))
    if check and proc.returncode != 0:
        raise AssertionError(f"{SCRIPT} {args} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def staging_of(proc):
    return next(line.split(" ", 1)[1] for line in proc.stdout.splitlines()
                if line.startswith("staging "))


def files(root):
    """{kind: path} of the one file set in a dump root."""
    out = {}
    for path in glob.glob(os.path.join(str(root), "tfdbg_events.*")):
        kind = path.rsplit(".", 1)[1]
        assert kind not in out, f"{root} holds more than one file set"
        out[kind] = path
    return out


tree = files_under   # {file name: bytes} of a dump root


def events(path):
    from tensorflow.core.protobuf import debug_event_pb2
    from tfblackbox.schema.formats import tfrecord
    return [debug_event_pb2.DebugEvent.FromString(d) for _o, d in tfrecord.read_records(path)]


class Ids:
    """uuid -> its order of first appearance, per kind of id."""

    def __init__(self):
        self.ids = collections.defaultdict(dict)

    def __call__(self, kind, value):
        if not value:
            return value
        table = self.ids[kind]
        return table.setdefault(value, f"{kind}{len(table)}")


def normalized(root):
    """{kind: [serialized DebugEvent]} with wall times zeroed and uuids canonicalized (ids
    numbered in the order the stack-frames and graphs files define them)."""
    paths = files(root)
    ids = Ids()
    out = {}
    for kind in ("metadata", "stack_frames", "graphs", "source_files", "execution",
                 "graph_execution_traces"):
        records = []
        for ev in events(paths[kind]):
            ev.wall_time = 0
            what = ev.WhichOneof("what")
            if what == "debug_metadata":
                ev.debug_metadata.tfdbg_run_id = ""
            elif what == "stack_frame_with_id":
                ev.stack_frame_with_id.id = ids("frame", ev.stack_frame_with_id.id)
            elif what == "debugged_graph":
                g = ev.debugged_graph
                g.graph_id = ids("graph", g.graph_id)
                g.outer_context_id = ids("graph", g.outer_context_id)
            elif what == "graph_op_creation":
                op = ev.graph_op_creation
                op.graph_id = ids("graph", op.graph_id)
                _frames(ids, op.code_location)
            elif what == "execution":
                ev.execution.graph_id = ids("graph", ev.execution.graph_id)
                _frames(ids, ev.execution.code_location)
            elif what == "graph_execution_trace":
                t = ev.graph_execution_trace
                t.tfdbg_context_id = ids("graph", t.tfdbg_context_id)
            records.append(ev.SerializeToString(deterministic=True))
        out[kind] = records
    return out


def _frames(ids, code_location):
    new = [ids("frame", f) for f in code_location.stack_frame_ids]
    del code_location.stack_frame_ids[:]
    code_location.stack_frame_ids.extend(new)


def reader_view(root):
    """What DebugDataReader returns for a dump root, as plain data (ids and wall times kept:
    use it to compare a rebuild with the files it was rebuilt from)."""
    from tensorflow.python.debug.lib import debug_events_reader
    with debug_events_reader.DebugDataReader(str(root)) as reader:
        reader.update()
        executions = reader.executions()
        traces = reader.graph_execution_traces()
        return {
            "tfdbg_run_id": reader.tfdbg_run_id(),
            "tensorflow_version": reader.tensorflow_version(),
            "starting_wall_time": reader.starting_wall_time(),
            "source_files": [(h, p, tuple(reader.source_lines(h, p)))
                             for h, p in reader.source_file_list()],
            "graphs": sorted((g.graph_id, g.name, g.outer_graph_id)
                             for g in reader.outermost_graphs()),
            "ops": [(d.op_type, d.op_name, d.graph_id, d.output_tensor_ids, d.stack_frame_ids)
                    for d in reader.graph_op_digests()],
            "executions": [(e.op_type, e.wall_time, e.graph_id, e.tensor_debug_mode,
                            e.output_tensor_ids, e.input_tensor_ids, e.stack_frame_ids,
                            _values(e.debug_tensor_values)) for e in executions],
            "execution_values": [_arrays(reader.execution_to_tensor_values(e))
                                 for e in executions],
            "traces": [(t.op_type, t.op_name, t.output_slot, t.graph_ids, t.wall_time,
                        t.tensor_debug_mode, _values(t.debug_tensor_value)) for t in traces],
            "trace_values": [_arrays([reader.graph_execution_trace_to_tensor_value(t)])
                             for t in traces],
            "stack_frames": sorted(
                (e_id, reader._stack_frame_by_id[e_id]) for e_id in reader._stack_frame_by_id),
        }


def _values(v):
    return None if v is None else tuple(tuple(x) if isinstance(x, list) else x for x in v)


def _arrays(values):
    import numpy as np
    return [(str(np.asarray(v).dtype), np.asarray(v).shape, np.asarray(v).tobytes())
            for v in values]
