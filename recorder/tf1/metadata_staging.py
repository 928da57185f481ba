"""The in-memory capture's staging dir: what TF still writes as files when the tensors skip them.

TF publishes a run's core metadata (its session_run_index, executor_step_index, feeds and
fetches) and a new executor's partition graphs only to `file://` and `grpc://` URLs, never to
the `memcbk://` callback the tensors go to. With the tensors in memory nothing else lands in the
staging URL, so each training thread keeps one fixed dir for every run, and no symlink is
retargeted before each run (that retarget was ~80 us of the training thread's step at 24
tensors, and scanning a run dir tree ~90 us of the ingest's). The files name themselves:
`_tfdbg_core_metadata_sessionrun<index>_<micros>` and, in a device dir,
`_tfdbg_graph_hash<hash>_<micros>`, with the micros of TF's publish (the wall clock, as
time.time()). So a sealed run owns the files published between its start (`since`, taken
before session.run) and its seal (`until`, taken on its thread after session.run returned,
before the next run began); the newest metadata file among them is its own. Older files were
left by a run whose ingest failed: removed, never taken for this run's. Graphs
are published while TF builds an executor, before that run's metadata, and only then
(executor_step_index 0), so the device dirs are looked at only for such a run or for one
without metadata (a run that raised).
"""

import os
import re

from tfblackbox.schema.formats import tfdbg_v1_layout as layout

META_RE = re.compile(r"^_tfdbg_core_metadata_sessionrun(\d{14})_(\d+)$")
NEW_EXECUTOR = b'"executor_step_index":0,'


def thread_dir(root, slot):
    """Thread `slot`'s fixed staging dir (created once, emptied by read_run)."""
    path = os.path.join(root, f"t{slot}", "m")
    os.makedirs(path, exist_ok=True)
    return path


def read_run(path, since_micros, until_micros):
    """The files of the run begun at `since_micros` and sealed at `until_micros` in a thread's
    fixed dir, removed as read (with older leftovers): a layout.DumpDir with its core metadata
    and the graphs TF published for it."""
    out = layout.DumpDir()
    metas, devices = [], []
    with os.scandir(path) as it:
        for e in it:
            name = e.name
            m = META_RE.match(name) if name.startswith(layout.CORE_METADATA_PREFIX) else None
            if m:
                micros = int(m.group(2))
                if micros < since_micros:
                    os.remove(e.path)
                elif micros <= until_micros:       # later ones: the next run's
                    metas.append((int(m.group(1)), name, e.path))
            elif name.startswith(layout.DEVICE_PREFIX) and e.is_dir(follow_symlinks=False):
                devices.append((name, e.path))
            else:
                out.unknown.append(e.path)
    if metas:
        metas.sort()
        _index, out.core_metadata_name, full = metas[-1]
        out.core_metadata = layout.read_file(full)
        for _i, _n, stale in metas:
            os.remove(stale)
    if out.core_metadata is None or NEW_EXECUTOR in out.core_metadata:
        for dev, full in devices:
            _read_graphs(out, dev, full, since_micros, until_micros)
    return out


def _read_graphs(out, dev, folder, since_micros, until_micros):
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        m = layout.GRAPH_FILE_RE.match(e.name) if e.name.startswith(layout.GRAPH_PREFIX) else None
        if m is None or not e.is_file(follow_symlinks=False):
            out.unknown.append(e.path)
        elif int(m.group(2)) < since_micros:
            os.remove(e.path)
        elif int(m.group(2)) <= until_micros:    # later ones: the next run's executor
            out.graphs.append(layout.GraphFile(dev, m.group(1), int(m.group(2)),
                                               layout.read_file(e.path)))
            os.remove(e.path)
    if dev not in out.device_dirs:
        out.device_dirs.append(dev)
