"""A replayed run's time: its start, each row's `_runtime`, the exit record's runtime.

What wandb 0.31 does with time (read in wandb-core's source, core/internal/stream/handler.go
and core/internal/timer, and checked on the installed wandb-core's transaction logs):
- The run record's `start_time` is `Run._start_time`, `time.time()` when wandb.init builds the
  Run; `Settings.x_start_time` is overwritten by wandb.init too. Neither can be given.
- `_runtime` is not taken from the logged row: the handler sets it on every history row it
  flushes, from a timer started when it handles the RunStart request (`runTimer`, offset by the
  run record's `runtime`, whole seconds, for a resumed run). The same timer writes the summary's
  `_wandb.runtime` and `_runtime` (whole seconds) at every flush and at exit, and the exit
  record's `runtime` (whole seconds).
- A resumed run (online) starts its timer at the run's runtime so far, whole seconds: the
  largest of the summary's `_wandb.runtime`, the last history row's and the last system-metrics
  row's `_runtime` (core/internal/runbranch/resume.go), so its runtime is the sum of the time
  its processes ran, not the time since it first started.

So a replay, which runs later and faster than the training, cannot have wandb compute these.
It lets wandb write the chunk as usual, then rewrites the chunk's transaction log before it is
published (txlog.py): the run records' `start_time` becomes the training's `init` time, each
history row's `_runtime` its `_timestamp` (its recorded wall time) on the training's clock
below, the summary's runtime items those of the row they were written with, and the exit
record's runtime the run's recorded duration. This relies only on the record fields named in
wandb's `wandb_internal.proto` (RunRecord.start_time, HistoryItem/SummaryItem key, nested_key
and value_json, RunExitRecord.runtime); `wandb sync` uploads the rewritten file as it is
(core/internal/runsync sends its history, summary and exit records to the server unchanged).

The training's clock (RunClock), as W&B counts it: attempt 1 runs from the run's start
(`recorder.init`); each later attempt (a resume) from its own start, offset by the whole
seconds of runtime the attempts before it ran (each ran from its start to its end: its
`finish`, or, for an attempt that died, its last recorded row).
"""

import bisect
import json
import math

_TABLES = ("scalars", "histograms", "media", "tensors", "log_values", "wandb_objects",
           "console")


class RunClock:
    def __init__(self, start, attempts):
        """start: the run's start time; attempts: [(start, end)] in attempt order (the first
        one's start is the run's)."""
        self.start = start
        self.starts, self.offsets = [], []
        offset = 0.0
        for i, (a, b) in enumerate(attempts or [(start, None)]):
            a = start if i == 0 else a
            self.starts.append(a)
            self.offsets.append(offset)
            if b is not None:
                offset = float(math.floor(offset + max(0.0, b - a)))
        self.ends = [b for _a, b in attempts or [(start, None)]]

    @classmethod
    def of(cls, store, record):
        writers = sorted(store.writers(record.run_id), key=lambda w: w.attempt)
        attempts = [(w.started_at, w.ended_at) for w in writers]
        died = [i for i, (_a, b) in enumerate(attempts[:-1]) if b is None]
        if died:   # an attempt that died ran until its last row (W&B: its last _runtime)
            last = _last_walls(store, record.run_id)
            for i in died:
                w = writers[i]
                attempts[i] = (w.started_at, last.get(w.attempt, w.started_at))
        return cls(record.started_at, attempts)

    def runtime_at(self, t):
        """Seconds of runtime at wall time t, as W&B counts them."""
        i = max(0, bisect.bisect_right(self.starts, t) - 1)
        return self.offsets[i] + max(0.0, t - self.starts[i])


def end_time(record, status, last_wall=None):
    """When the run's runtime ends for a chunk's exit record: the run's end if it ended; its
    last heartbeat if it died; the chunk's last row if it is still recording (a later chunk
    goes on from there). Never before the chunk's last row."""
    if record.ended_at is not None:
        end = record.ended_at
    elif status == "died":
        end = record.heartbeat_at or record.started_at
    else:
        end = last_wall if last_wall is not None else record.started_at
    return max(end, last_wall) if last_wall is not None else end


def _last_walls(store, run_id):
    """{attempt: latest wall time of its rows} over the tables a replay pushes."""
    out = {}
    for table in _TABLES:
        if not store.segments(run_id, table):
            continue
        t = store.read(run_id, table, columns=["attempt", "wall_time"], latest_only=False)
        for a, w in zip(t["attempt"].to_pylist(), t["wall_time"].to_pylist()):
            if w > out.get(a, -math.inf):
                out[a] = w
    return out


# -- the chunk's transaction log ---------------------------------------------------------

# the keys retime looks for, as wandb writes them: an item's `nested_key` path when it has
# one (wandb-core's summary items: ["_wandb", "runtime"], ["metric/1"]), else its `key`
_STAMP, _RUNTIME, _WANDB_RUNTIME = ["_timestamp"], ["_runtime"], ["_wandb", "runtime"]


def _is(item, path):
    """The item's key is `path` (a list of one or two names). Compared without building the
    key: retime looks at every item of every history and summary record of the chunk, tens
    of thousands of them for a run of 1 000 steps, and that was a third of its CPU."""
    nested = item.nested_key
    if nested:
        return nested == path
    return len(path) == 1 and item.key == path[0]


def retime(path, clock, end, start=None):
    """Rewrites the finished chunk's log at `path` on the training's clock (module doc);
    `end` is the wall time the exit record's runtime counts to, `start` the run record's
    start time (default: the run's)."""
    from . import txlog
    txlog.wait_complete(path)
    runtimes = []   # the new _runtime of each history record, in order
    for rec in txlog.iter_records(path):
        if rec.WhichOneof("record_type") == "history":
            stamp = next((json.loads(i.value_json) for i in rec.history.item
                          if _is(i, _STAMP)), None)
            runtimes.append(None if stamp is None else clock.runtime_at(stamp))
    total = clock.runtime_at(end)
    # the runtime of the next history record with one, from each history record on
    upcoming = [total] * (len(runtimes) + 1)
    for i in range(len(runtimes) - 1, -1, -1):
        upcoming[i] = runtimes[i] if runtimes[i] is not None else upcoming[i + 1]
    txlog.rewrite(path, _retimed(txlog.iter_records(path), runtimes, upcoming, total,
                                 start or clock.start))
    return total


def _retimed(records, runtimes, upcoming, total, start):
    seen = 0
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "run" and rec.run.HasField("start_time"):
            rec.run.start_time.FromMicroseconds(int(round(start * 1e6)))
        elif kind == "history":
            new = runtimes[seen]
            seen += 1
            if new is not None:
                text = json.dumps(new)
                for item in rec.history.item:
                    if _is(item, _RUNTIME):
                        item.value_json = text
        elif kind == "summary":
            # written with the row that follows (core: updateRunTiming, updateSummary, then
            # the history record) or, after the last row, at exit
            nxt = upcoming[seen]
            whole, exact = json.dumps(int(nxt)), json.dumps(nxt)
            for item in rec.summary.update:
                if _is(item, _WANDB_RUNTIME):
                    item.value_json = whole
                elif _is(item, _RUNTIME):
                    item.value_json = whole if _is_int(item.value_json) else exact
        elif kind == "exit":
            rec.exit.runtime = int(total)
        yield rec


def _is_int(text):
    return text.lstrip("-").isdigit()
