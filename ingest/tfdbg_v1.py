"""`tfblackbox import-dumps SESSION_ROOT`, tfdbg v1 part: archive DumpingDebugHook output (the
command itself is tfdbg.py).

Every `run_<micros>_<n>/` under SESSION_ROOT becomes one `tfdbg_v1_runs` row with its tensors and
partition graphs, losslessly: `replay --to debug-dump` writes the same files back, byte for
byte. Each distinct partition graph is stored once per device; a run dir's graph file is
rebuilt from it and that file's own wall time and name, or, if its bytes would not come back
exactly, kept whole in the run's row. A file that fits no part of the tfdbg layout stops the
import with its name (nothing would be lost silently). Rows are written as segments of a new
attempt of the run (a new run unless --run names an existing one).
"""

import os
import socket
import sys

from tfblackbox.schema import BlackboxError
from tfblackbox.schema.codecs import rows, tfdbg_v1_codec, tfdbg_v1_rows
from tfblackbox.schema.formats import tfdbg_v1 as proto, tfdbg_v1_layout as layout
from tfblackbox.schema.store.records import new_run_id

FLUSH_BYTES = 64 << 20


class _Segments:
    """The import's rows, written as segments of one attempt every FLUSH_BYTES."""

    def __init__(self, store, run_id, writer_id, attempt):
        self.store, self.run_id, self.writer_id = store, run_id, writer_id
        self.buffers = rows.ColumnBuffers(attempt)
        self.nbytes, self.segments = 0, 0
        self.encoder = tfdbg_v1_codec.Encoder()

    def flush(self):
        tables = self.buffers.take()
        for name in ("tfdbg_v1_graphs", "tfdbg_v1_tensors", "tfdbg_v1_runs"):   # runs last
            if name in tables:
                self.store.write_segment(self.run_id, name, tables[name], self.writer_id)
                self.segments += 1
        self.nbytes = 0


def _run_dirs(root):
    if not os.path.isdir(root):
        raise BlackboxError(f"session root {root} is not a directory")
    dirs, odd = [], []
    for name in os.listdir(root):
        m = layout.RUN_DIR_RE.match(name)
        if m and os.path.isdir(os.path.join(root, name)):
            dirs.append((int(m.group(1)), int(m.group(2)), name))
        else:
            odd.append(name)
    if odd:
        raise BlackboxError(f"{os.path.join(root, sorted(odd)[0])}: not a run_<micros>_<n> dump "
                            f"dir of DumpingDebugHook ({len(odd)} such entries); nothing imported")
    return [name for _m, _n, name in sorted(dirs)]


def open_run(store, run_id, root):
    """(run id, created): the run to import into, made if it does not exist."""
    if run_id is not None and store.has_run(run_id):
        return run_id, False
    run_id = run_id or new_run_id()
    store.create_run(run_id, tags=["import-dumps"], name=os.path.basename(os.path.abspath(root)),
                     notes=f"imported from {os.path.abspath(root)}", host=socket.gethostname(),
                     pid=os.getpid(), command=" ".join(sys.argv))
    return run_id, True


def import_session_root(store, root, run_id=None):
    names = _run_dirs(root)
    for name in names:   # check everything before writing anything
        d = layout.read_dump_dir(os.path.join(root, name))
        if d.unknown:
            raise BlackboxError(f"{d.unknown[0]}: does not fit the tfdbg dump layout "
                                f"(<node>_<slot>_<op>_<micros>); nothing imported")
    run_id, created = open_run(store, run_id, root)
    writer_id, attempt = store.begin_attempt(run_id, socket.gethostname(), os.getpid())
    out = _Segments(store, run_id, writer_id, attempt)
    seen = {(g["device"], g["graph_hash"]) for g in store.read(
        run_id, "tfdbg_v1_graphs", columns=["device", "graph_hash"], latest_only=False).to_pylist()}
    tensors = 0
    try:
        for name in names:
            tensors += _import_dir(out, os.path.join(root, name), name, seen)
            if out.nbytes >= FLUSH_BYTES:
                out.flush()
        out.flush()
    finally:
        store.end_attempt(writer_id)
        if created:
            store.finish_run(run_id, 0)
    return {"run_id": run_id, "session_root": os.path.abspath(root), "runs": len(names),
            "tensors": tensors, "segments": out.segments}


def _import_dir(out, path, name, seen):
    d = layout.read_dump_dir(path)
    micros, n = (int(x) for x in layout.RUN_DIR_RE.match(name).groups())
    step = _global_step(d.core_metadata)
    parts = {g.device_dir: proto.graph_event_parts(g.data) for g in d.graphs}
    names = layout.real_device_names(d.device_dirs, [gd for _w, gd in parts.values()])
    graphs = []
    for g in sorted(d.graphs, key=lambda g: g.device_dir):
        device = names[g.device_dir]
        wall, graph_def = parts[g.device_dir]
        raw = None if proto.graph_event(wall, graph_def) == g.data else g.data
        graphs.append((device, g.graph_hash, g.timestamp, wall, raw))
        if (device, g.graph_hash) not in seen:
            seen.add((device, g.graph_hash))
            out.buffers.add("tfdbg_v1_graphs", **tfdbg_v1_rows.debug_graph_row(
                step, device, g.graph_hash, g.timestamp, wall, graph_def))
            out.nbytes += len(graph_def)
    if d.tensors:
        out.buffers.add_table("tfdbg_v1_tensors", tfdbg_v1_rows.debug_tensor_table(
            step, name, d.tensors, names.__getitem__, out.encoder))
    row = tfdbg_v1_rows.debug_run_row(step, micros / 1e6, name, n, "ok", "import",
                                      d.core_metadata_name, d.core_metadata, d.fetches_info,
                                      d.feed_keys_info,
                             sorted(names[x] for x in d.device_dirs), graphs, d.tensors)
    out.buffers.add("tfdbg_v1_runs", **row)
    out.nbytes += row["tensor_bytes"]
    return len(d.tensors)


def _global_step(core_metadata):
    import json
    if not core_metadata:
        return 0
    try:
        return int(json.loads(proto.log_message(core_metadata) or "{}").get("global_step", 0))
    except (ValueError, TypeError):
        return 0
