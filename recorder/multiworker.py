"""The runs of a multi-worker job: under TF_CONFIG (MultiWorkerMirroredStrategy,
ParameterServerStrategy) every task records its own run, `<run>-<type><index>`, in group
`<run>`, with the same `recorder.init` call in every task.

`<run>` is the run_id given to init, else one every task derives alike without talking to the
others: a hash of TF_CONFIG's cluster spec with the project and name. A task restarted with the
same TF_CONFIG (preemption, a failed worker) therefore continues its run as a new attempt.
"""

import dataclasses
import hashlib
import json
import os

from tfblackbox.schema import BlackboxError

TASK_TYPES = ("chief", "master", "worker", "ps", "evaluator")


@dataclasses.dataclass(frozen=True)
class Task:
    type: str
    index: int
    cluster: dict

    @property
    def suffix(self):
        return f"{self.type}{self.index}"


def current_task(environ=None):
    """The task this process is in TF_CONFIG, or None outside a multi-worker job."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw or not raw.strip():
        return None
    try:
        config = json.loads(raw)
    except ValueError as e:
        raise BlackboxError(f"TF_CONFIG is not JSON ({e}): {raw[:200]!r}") from None
    if not isinstance(config, dict):
        raise BlackboxError(f"TF_CONFIG is not a JSON object: {raw[:200]!r}")
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
    if not cluster or not task:
        return None   # TensorFlow runs such a process as a single worker too
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in TASK_TYPES:
        raise BlackboxError(f"TF_CONFIG task type {kind!r}; expected one of "
                            f"{', '.join(TASK_TYPES)}")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise BlackboxError(f"TF_CONFIG task index {index!r}; expected an integer >= 0")
    return Task(kind, index, cluster)


def job_run_id(task, project=None, name=None):
    """The id every task of the job derives alike: `job-` and 10 hex digits of the cluster
    spec, project and name."""
    spec = json.dumps({"cluster": task.cluster, "project": project, "name": name},
                      sort_keys=True)
    return "job-" + hashlib.sha256(spec.encode()).hexdigest()[:10]


def task_run(task, run_id=None, name=None, group=None, project=None):
    """(run id, name, group, derived) of this task's run; `derived` when the job's id came
    from the cluster spec rather than from the caller."""
    base = run_id or job_run_id(task, project, name)
    return (f"{base}-{task.suffix}", f"{name}-{task.suffix}" if name else None,
            group or base, run_id is None)
