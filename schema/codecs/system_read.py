"""Reading back what recorder/system/ recorded for a run: the environment of each attempt,
the job type, the run's files and the system metrics samples (schema/tables/system.py)."""

import dataclasses
import json

from ..tables.system import METRICS_TABLE

_EVENT_COLUMNS = ["step", "wall_time", "attempt", "seq", "kind", "tag", "value_json"]


@dataclasses.dataclass
class Sample:
    attempt: int
    seq: int             # the sample's number within its attempt
    wall_time: float
    train_step: int
    reason: str          # interval | finish | trigger <kind> at step <n>
    values: dict         # wandb's key -> float


def _events(store, run_id, kinds):
    if not store.segments(run_id, "run_events"):
        return []
    t = store.read(run_id, "run_events", columns=_EVENT_COLUMNS, latest_only=False)
    rows = [dict(zip(_EVENT_COLUMNS, r)) for r in zip(*(t[c].to_pylist()
                                                         for c in _EVENT_COLUMNS))]
    return sorted((r for r in rows if r["kind"] in kinds),
                  key=lambda r: (r["attempt"], r["seq"]))


def environments(store, run_id):
    """[(attempt, environment dict)] in attempt order: wandb's EnvironmentRecord fields."""
    return [(r["attempt"], json.loads(r["value_json"]))
            for r in _events(store, run_id, {"environment"})]


def job_type(store, run_id):
    """The job_type the latest attempt that gave one recorded, or None."""
    types = [json.loads(r["value_json"]) for r in _events(store, run_id, {"job_type"})]
    return types[-1] if types else None


def files(store, run_id):
    """[(attempt, {"path", "sha256", "size"})] in attempt order."""
    return [(r["attempt"], json.loads(r["value_json"]))
            for r in _events(store, run_id, {"file"})]


def samples(store, run_id):
    """Every sample of the run (Sample), ordered by wall time (then attempt and number)."""
    if not store.segments(run_id, METRICS_TABLE):
        return []
    t = store.read(run_id, METRICS_TABLE, latest_only=False)
    cols = {c: t[c].to_pylist() for c in ("attempt", "step", "wall_time", "tag", "value",
                                           "train_step", "reason")}
    out = {}
    for i in range(t.num_rows):
        key = (cols["attempt"][i], cols["step"][i])
        s = out.get(key)
        if s is None:
            s = out[key] = Sample(key[0], key[1], cols["wall_time"][i], cols["train_step"][i],
                                  cols["reason"][i], {})
        s.values[cols["tag"][i]] = cols["value"][i]
    return sorted(out.values(), key=lambda s: (s.wall_time, s.attempt, s.seq))
