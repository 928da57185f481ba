"""`tfblackbox import-dumps SESSION_ROOT --store DIR [--run ID]`: archive DumpingDebugHook output.

Every `run_<micros>_<n>/` under SESSION_ROOT becomes one `debug_runs` row with its tensors and
partition graphs, losslessly: `replay --to debug-dump` writes the same files back, byte for
byte. Each distinct partition graph is stored once per device; a run dir's graph file is
rebuilt from it and that file's own wall time and name, or, if its bytes would not come back
exactly, kept whole in the run's row. A file that fits no part of the tfdbg layout stops the
import with its name (nothing would be lost silently). Rows are written as segments of a new
attempt of the run (a new run unless --run names an existing one).
"""

import os
import secrets
import socket
import string
import sys

import pyarrow as pa

from tfblackbox.schema import BlackboxError, Store
from tfblackbox.schema.formats import tfdbg_v1_layout as layout
from tfblackbox.schema.formats import tfdbg_v1 as proto
from tfblackbox.schema.tables import schema_of

from .cli import EXIT_OK, print_json

FLUSH_BYTES = 64 << 20


class _Tables:
    """Column buffers written as segments of one attempt every FLUSH_BYTES."""

    def __init__(self, store, run_id, writer_id, attempt):
        self.store, self.run_id, self.writer_id, self.attempt = store, run_id, writer_id, attempt
        self.cols, self.nbytes, self.segments = {}, 0, 0

    def add(self, table, nbytes=0, **row):
        cols = self.cols.setdefault(table, {f.name: [] for f in schema_of(table)})
        row["attempt"] = self.attempt
        for name, values in cols.items():
            values.append(row.get(name))
        self.nbytes += nbytes

    def flush(self):
        for name in ("debug_graphs", "debug_tensors", "debug_runs"):   # runs last
            cols = self.cols.pop(name, None)
            if cols and cols["step"]:
                table = pa.Table.from_pydict(cols, schema=schema_of(name))
                self.store.write_segment(self.run_id, name, table, self.writer_id)
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


def _open_run(store, run_id, root):
    if run_id is not None and store.has_run(run_id):
        return run_id, False
    run_id = run_id or "".join(secrets.choice(string.ascii_lowercase + string.digits)
                               for _ in range(8))
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
    run_id, created = _open_run(store, run_id, root)
    writer_id, attempt = store.begin_attempt(run_id, socket.gethostname(), os.getpid())
    out = _Tables(store, run_id, writer_id, attempt)
    seen = {(g["device"], g["graph_hash"]) for g in store.read(
        run_id, "debug_graphs", columns=["device", "graph_hash"], latest_only=False).to_pylist()}
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
    graph_devices, hashes, stamps, walls, raws = [], [], [], [], []
    for g in sorted(d.graphs, key=lambda g: g.device_dir):
        device = names[g.device_dir]
        wall, graph_def = parts[g.device_dir]
        graph_devices.append(device)
        hashes.append(g.graph_hash)
        stamps.append(g.timestamp)
        walls.append(wall)
        raws.append(None if proto.graph_event(wall, graph_def) == g.data else g.data)
        if (device, g.graph_hash) not in seen:
            seen.add((device, g.graph_hash))
            out.add("debug_graphs", len(graph_def), step=step, wall_time=g.timestamp / 1e6,
                    tag=device, device=device, graph_hash=g.graph_hash, timestamp=g.timestamp,
                    event_wall_time=wall, graph_def=graph_def)
    nbytes = 0
    for t in d.tensors:
        dtype, shape = proto.tensor_info(t.data)
        nbytes += len(t.data)
        out.add("debug_tensors", len(t.data), step=step, wall_time=t.timestamp / 1e6,
                tag=f"{t.node_name}:{t.output_slot}:{t.debug_op}", run_key=name,
                device=names[t.device_dir], node_name=t.node_name, output_slot=t.output_slot,
                debug_op=t.debug_op, timestamp=t.timestamp,
                ext_timestamp=None if t.ext_timestamp == str(t.timestamp) else t.ext_timestamp,
                dtype=dtype, shape=shape, event=t.data)
    out.add("debug_runs", step=step, wall_time=micros / 1e6, tag=name, run_key=name,
            session_run=n, status="ok", source="import",
            core_metadata_name=d.core_metadata_name, core_metadata=d.core_metadata,
            fetches_info=d.fetches_info, feed_keys_info=d.feed_keys_info,
            devices=sorted(names[x] for x in d.device_dirs), graph_devices=graph_devices,
            graph_hashes=hashes, graph_timestamps=stamps, graph_wall_times=walls,
            graph_events=raws if any(r is not None for r in raws) else None,
            tensor_count=len(d.tensors), tensor_bytes=nbytes)
    return len(d.tensors)


def _global_step(core_metadata):
    import json
    if not core_metadata:
        return 0
    try:
        return int(json.loads(proto.log_message(core_metadata) or "{}").get("global_step", 0))
    except (ValueError, TypeError):
        return 0


def main(args):
    store = Store.create(args.store)
    result = import_session_root(store, args.session_root, args.run_id)
    if args.json:
        print_json(result)
    else:
        print(f"imported {result['runs']} session.run dir(s), {result['tensors']} tensor(s) from "
              f"{result['session_root']} into run {result['run_id']} of {store.root}")
    return EXIT_OK
