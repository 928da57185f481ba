"""System metrics (recorder/system/, table `system_metrics`) as MLflow's own: the keys MLflow's
system metrics monitor logs (`system/cpu_utilization_percentage`, ...), step = the sample's
number in the run (0, 1, ... over every attempt, in the order taken, as MLflow numbers its
samples), timestamp = when it was taken.

A wandb key goes under MLflow's name where both measure the same thing, converted to MLflow's
unit (MB = 1e6 bytes); the ones MLflow has no name for (`cpu`, wandb's per-process CPU, which
is not MLflow's machine-wide CPU; `proc.*`; `disk.<device>.in/out`; `network.tcpRetransmits`;
`gpu.N.memory`, `gpu.N.temp`, ...) go as `system/<wandb key>`, so MLflow's system metrics
panel shows them beside its own.

Optional: a store without the table (or a run without samples) gives nothing; the table is
read through schema/codecs/system_read.py only when a segment of it is registered.
"""

import re

from .tracking import held

_GB = 1024 ** 3

_SAME = {   # wandb key -> (MLflow key, factor to MLflow's unit)
    "memory_percent": ("system_memory_usage_percentage", 1.0),
    "disk./.usagePercent": ("disk_usage_percentage", 1.0),
    "disk./.usageGB": ("disk_usage_megabytes", _GB / 1e6),
    "network.sent": ("network_transmit_megabytes", 1e-6),
    "network.recv": ("network_receive_megabytes", 1e-6),
}
_GPU = {   # gpu.N.<wandb> -> gpu_N_<MLflow>
    "gpu": ("utilization_percentage", 1.0),
    "memoryAllocated": ("memory_usage_percentage", 1.0),
    "memoryAllocatedBytes": ("memory_usage_megabytes", 1e-6),
    "powerWatts": ("power_usage_watts", 1.0),
    "powerPercent": ("power_usage_percentage", 1.0),
}
_GPU_KEY = re.compile(r"^gpu\.(\d+)\.(\w+)$")


def mlflow_key(key):
    """(MLflow metric key, factor) of a wandb system metrics key."""
    if key in _SAME:
        name, factor = _SAME[key]
        return f"system/{name}", factor
    m = _GPU_KEY.match(key)
    if m and m.group(2) in _GPU:
        name, factor = _GPU[m.group(2)]
        return f"system/gpu_{m.group(1)}_{name}", factor
    return f"system/{key}", 1.0


def samples(store, run_id):
    """Every system metrics sample of the run in the order taken, or [] (no table, no rows)."""
    if not store.segments(run_id, "system_metrics"):
        return []
    from tfblackbox.schema.codecs import system_read
    return system_read.samples(store, run_id)


def new_samples(store, run_id, progress):
    """The samples not pushed yet: progress is {attempt: last sample number pushed}."""
    return [s for s in samples(store, run_id) if s.seq > progress.get(str(s.attempt), -1)]


def points(sample_list, first_step):
    """(key, value, timestamp ms, step) of the samples, numbered from first_step."""
    out = []
    for n, s in enumerate(sample_list):
        stamp = int(round(s.wall_time * 1000))
        for key, value in sorted(s.values.items()):
            name, factor = mlflow_key(key)
            out.append((name, value * factor if value is not None else value, stamp,
                        first_step + n))
    return out


def push(client, store, run_id, mrun, dest, step, state, result):
    """System metrics samples not pushed yet, under MLflow's system/ names (system.py)."""
    from mlflow.entities import Metric
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH
    pending = state.pop("system_pending", None)
    todo = []
    if pending:   # a killed replay's: the same samples again, less what MLflow holds
        again = new_samples(store, run_id, pending["from"])[:pending["count"]]
        pts = points(again, pending["first"])
        skip = held(client, mrun, {p[0] for p in pts}, pending["first"],
                     pending["first"] + pending["count"] - 1)
        todo.append((again, pending["first"], pending["from"], skip))
    else:
        progress = dict(state.get("system") or {})
        new = new_samples(store, run_id, progress)
        if new:
            first = state.get("system_step", 0)
            state["system_pending"] = {"first": first, "from": progress, "count": len(new)}
            store.set_cursor(run_id, dest, step, state)
            state.pop("system_pending")
            todo.append((new, first, progress, set()))
    for samples, first, progress, skip in todo:
        pts = [Metric(k, v, t, s) for k, v, t, s in points(samples, first)
               if (k, s) not in skip]
        for i in range(0, len(pts), MAX_METRICS_PER_BATCH):
            client.log_batch(mrun, metrics=pts[i:i + MAX_METRICS_PER_BATCH])
        progress = dict(progress)
        for s in samples:
            progress[str(s.attempt)] = max(progress.get(str(s.attempt), -1), s.seq)
        state["system"] = progress
        state["system_step"] = first + len(samples)
        result["system_samples"] += len(samples)
