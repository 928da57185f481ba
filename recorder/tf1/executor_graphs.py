"""The partition graphs TF published for each executor of a DumpHook capture, and which
executor a dumped run used (its core metadata's feeds, fetches and targets)."""

import json

from tfblackbox.schema.formats import tfdbg_v1 as proto, tfdbg_v1_layout as layout

# The recorder's own nodes (the global-step read, global_step.py) live in this name scope;
# TF dumps them with every watched run, DumpingDebugHook's dumps would not have them.
# (native/capture.cc names it too: a capture failing on one of them is not counted.)
OWN_SCOPE = "tfblackbox/"


class ExecutorGraphs:
    """The partition graphs TF published for one executor, parsed (the recorder's own nodes
    cut, the devices' names learned) when the first step that ran them is recorded: in
    black-box mode only if a trigger writes one (at 2 509 tensors that parse took ~0.1 s of
    the ingest thread's CPU in a 40-step ring run)."""

    def __init__(self, files):
        self._files, self._parsed = files, None

    def parsed(self, learn_names):
        """{device dir: (GraphFile, wall time, GraphDef bytes without OWN_SCOPE)}; the first
        call hands the devices' real names to learn_names({device dir: name})."""
        if self._parsed is None:
            fresh = {}
            for g in self._files:
                wall, graph_def = proto.graph_event_parts(g.data)
                fresh[g.device_dir] = (g, wall, proto.without_scope(graph_def, OWN_SCOPE))
            learn_names(layout.real_device_names([g.device_dir for g, _w, _d in fresh.values()],
                                                 [gd for _g, _w, gd in fresh.values()]))
            self._parsed, self._files = fresh, None
        return self._parsed


def is_own_node(node_name):
    return node_name.startswith(OWN_SCOPE)


class ExecutorSignatures:
    """executor_signature, remembered by the bytes from `"input_names"` on: TF writes the
    counters (global_step, session_run_index, executor_step_index) before the names, so a
    training loop's steps share one key and the JSON is parsed once (~25 us a step)."""

    MAX = 256   # distinct fetch/feed sets remembered; past that, parsed every time

    def __init__(self):
        self._known = {}

    def of(self, core_metadata):
        if not core_metadata:
            return None
        at = core_metadata.find(b'"input_names"')
        if at < 0:
            return executor_signature(core_metadata)
        key = core_metadata[at:]
        sig = self._known.get(key, self)
        if sig is self:
            sig = executor_signature(core_metadata)
            if len(self._known) < self.MAX:
                self._known[key] = sig
        return sig


def executor_signature(core_metadata):
    """The part of the core metadata that (with the watch config and the URL) picks TF's
    executor: feeds, fetches and targets."""
    if not core_metadata:
        return None
    try:
        msg = json.loads(proto.log_message(core_metadata) or "{}")
        return (tuple(sorted(msg.get("input_names", ()))),
                tuple(sorted(msg.get("output_names", ()))),
                tuple(sorted(msg.get("target_nodes", ()))))
    except ValueError:
        return None

