"""`replay --to debug-dump`, tfdbg v1 part: rebuild DebugDumpDir layouts from the store (no
TensorFlow; the command itself is debug_dump.py).

One `run_<micros>_<n>/` per recorded session.run, with the files TF wrote, byte for byte: the
core metadata, fetches and feed-keys Events, per device the partition graph that run executed
and one file per dumped tensor, named with its recorded timestamp (DebugDumpDir checks their
causal order). With one run the dirs go straight into OUT, with several into OUT/<run_id>/.
Each dir is built under a hidden temporary name and renamed into place. Names are data: a
node, device or file name that would leave OUT (empty, '.', '..' parts, absolute, NUL) is
refused and reported, never written.
"""

import collections
import os
import re
import shutil

from tfblackbox.schema import BlackboxError, DumpLayoutError
from tfblackbox.schema.codecs import tfdbg_v1_decode
from tfblackbox.schema.formats import tfdbg_v1 as proto, tfdbg_v1_layout as layout
from tfblackbox.schema.formats.files import pid_alive as _pid_alive

from ..out_dirs import put_in_place

TENSOR_COLUMNS = ["attempt", "run_key", "device", "node_name", "output_slot", "debug_op",
                  "timestamp", "ext_timestamp", "event"]


def rebuild_run(store, run_id, target, steps=None, node_re=None):
    """Writes the session.run dirs of one run into `target`; returns what it did."""
    report = {"run_id": run_id, "target": target, "dirs": [], "tensors": 0, "rejected": [],
              "warnings": []}
    runs = store.read(run_id, "tfdbg_v1_runs", steps=steps).to_pylist()
    if not runs:
        return report
    graphs = {}
    for g in store.read(run_id, "tfdbg_v1_graphs", latest_only=False).to_pylist():
        graphs.setdefault((g["device"], g["graph_hash"]), g)
    by_run = collections.defaultdict(list)
    for t in tfdbg_v1_decode.read_debug_tensors(store, run_id, steps, TENSOR_COLUMNS):
        by_run[(t["attempt"], t["run_key"])].append(t)
    os.makedirs(target, exist_ok=True)
    remove_leftovers(target)
    for row in runs:
        name = row["run_key"]
        if not layout.RUN_DIR_RE.match(name or ""):
            report["rejected"].append(f"run dir name {name!r}")
            continue
        tensors = by_run.get((row["attempt"], name), ())
        written = _build(target, name, row, graphs, tensors, node_re, report)
        report["tensors"] += written
        report["dirs"].append(name)
    return report


_LEFTOVER_RE = re.compile(r"^(\.run_\d+_\d+\.incomplete|run_\d+_\d+\.old)-(\d+)$")


def remove_leftovers(target):
    """Removes what a killed rebuild left in `target`: its hidden half-built dirs and the
    previous dirs it had moved aside (`run_<...>.old-<pid>`, which would look like a run dir),
    for every pid that is no longer running."""
    for name in os.listdir(target):
        m = _LEFTOVER_RE.match(name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(os.path.join(target, name), ignore_errors=True)



def _build(target, name, row, graphs, tensors, node_re, report):
    tmp = os.path.join(target, f".{name}.incomplete-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        meta_name = row["core_metadata_name"]
        if row["core_metadata"] is not None:
            if meta_name and layout.CORE_METADATA_RE.match(meta_name):
                _write(tmp, meta_name, row["core_metadata"])
            else:
                report["rejected"].append(f"{name}: core metadata file name {meta_name!r}")
        if row["fetches_info"] is not None:
            _write(tmp, layout.FETCHES_INFO, row["fetches_info"])
        if row["feed_keys_info"] is not None:
            _write(tmp, layout.FEED_KEYS_INFO, row["feed_keys_info"])
        dev_dirs = {}
        for i, device in enumerate(row["graph_devices"] or ()):
            try:
                dev_dir = dev_dirs[device] = layout.device_dir(device)
            except DumpLayoutError as e:
                report["rejected"].append(f"{name}: {e}")
                continue
            ghash, ts = row["graph_hashes"][i], row["graph_timestamps"][i]
            raw = (row["graph_events"] or [None] * (i + 1))[i]
            if raw is None:
                g = graphs.get((device, ghash))
                if g is None:
                    report["warnings"].append(f"{name}: partition graph {ghash} of {device} is "
                                              f"not in the store")
                    continue
                raw = proto.graph_event(row["graph_wall_times"][i], g["graph_def"])
            if not str(ghash).isdigit():
                report["rejected"].append(f"{name}: graph hash {ghash!r}")
                continue
            _write(tmp, f"{dev_dir}/{layout.GRAPH_PREFIX}hash{ghash}_{int(ts)}", raw)
        for device in row["devices"] or ():   # a device dir may hold nothing (all filtered)
            try:
                os.makedirs(os.path.join(tmp, dev_dirs.get(device) or layout.device_dir(device)),
                            exist_ok=True)
            except DumpLayoutError as e:
                report["rejected"].append(f"{name}: {e}")
        written = 0
        for t in tensors:
            if node_re is not None and not node_re.search(t["node_name"]):
                continue
            try:
                dev_dir = dev_dirs.get(t["device"]) or layout.device_dir(t["device"])
                ext = t["ext_timestamp"] or str(t["timestamp"])
                rel = layout.dump_file_rel_path(t["node_name"], t["output_slot"], t["debug_op"],
                                                ext)
            except DumpLayoutError as e:
                report["rejected"].append(f"{name}: {e}")
                continue
            if isinstance(t["event"], BlackboxError):      # its encoding chain is damaged
                report["rejected"].append(f"{name}: {t['event']}")
                continue
            _write(tmp, f"{dev_dir}/{rel}", t["event"])
            written += 1
        put_in_place(tmp, os.path.join(target, name))
        return written
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write(root, rel, data):
    path = os.path.join(root, *rel.split("/"))
    if not layout.inside(root, path) or path == root:
        raise BlackboxError(f"refusing to write {rel!r}: it resolves outside {root}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "xb") as f:   # never overwrite: two rows for one file is damage
        f.write(data)

