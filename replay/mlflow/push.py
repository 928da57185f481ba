"""`replay --to mlflow --tracking-uri URI`: recorded runs into any MLflow tracking store (a
server, a database URL, a folder), with the original steps and times, exactly once.

One MLflow run per recorded run, in the experiment `--experiment` (default: the run's
project), tagged `tfblackbox.run_id`: a later replay, or the next attempt of a resumed run,
finds it again by that tag and goes on in it. The catalog keeps a cursor per (run, tracking
URI, experiment), as for W&B: the last step pushed and a state (the MLflow run id, params and
system samples pushed, the window in flight).

Exactly once. Steps are pushed a window at a time (about content.WINDOW_ROWS rows): the
window's step range is written into the cursor as *pending* first, then its points go by
`log_batch` (at most MLflow's 1000 a request) and its artifacts under names fixed by the rows,
and the cursor moves to the window's last step together with the next window's pending
mark (one catalog write a window). A replay that finds a window pending (the last one was
killed) pushes it again, leaving out every (metric, step) MLflow already holds and rewriting
the same artifact files, so a kill at any point writes each point once. Params are logged
again with the same value (MLflow takes that), tags are set, system samples go the same way
as windows (`system_pending`, system.py), artifact versions one at a time, each recorded in
the state once uploaded (artifacts.py). A run still recording is pushed up to its settled
step (schema/store/windows.py), its MLflow status RUNNING; `--follow` goes on until it ends.

Exit codes: 0 every run pushed or up to date; 1 some run's push failed (MLflow refused it;
its cursor stays where MLflow's data ends); 2 bad input, checked before anything is
written: unknown run, a tracking URI MLflow cannot take, a server or database that does not
answer, a deleted experiment, a run of the same name in the experiment that is not the
recorded run's (tracking.py).
"""

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

from tfblackbox.schema import BlackboxError, Store
from tfblackbox.schema.errors import ReplayError
from tfblackbox.schema.kill_points import kill_point
from tfblackbox.schema.store.records import run_state
from tfblackbox.schema.store.windows import recorded_step, settled_step

from tfblackbox.cli.exits import EXIT_FAILED, EXIT_OK
from . import artifacts, content, system
from .summary import dry_run, experiment_of, print_summary as _print
from .tracking import Tracking, check_uri, destination, held, normalize, run_name

FOLLOW_POLL_SECS = float(os.environ.get("TFBLACKBOX_FOLLOW_POLL_SECS", "10"))


@dataclasses.dataclass(frozen=True)
class MlflowReplay:
    """What `replay --to mlflow` was asked to do (the CLI builds it from its arguments)."""
    store: str
    tracking_uri: str
    experiment: str | None = None        # default: each run's project
    artifact_location: str | None = None  # for an experiment the replay creates
    runs: tuple = ()
    follow: bool = False
    dry_run: bool = False
    json: bool = False
    progress: bool = True
    jobs: int = 1
    artifacts: bool = True               # False: --no-artifacts


# -- entry point ----------------------------------------------------------------------------

def main(opts):
    if not opts.tracking_uri:
        check_uri(opts.tracking_uri)   # the error naming what --tracking-uri takes
    opts = dataclasses.replace(opts, tracking_uri=normalize(opts.tracking_uri))
    store = Store.open(opts.store, access="read" if opts.dry_run else "replay")
    records = select_runs(store, opts.runs)
    if opts.dry_run:
        report = [dry_run(store, r, opts) for r in records]
        _print(opts, {"dry_run": True, "tracking_uri": _shown(opts.tracking_uri),
                      "runs": report})
        return EXIT_OK
    uri = check_uri(opts.tracking_uri)
    opts = dataclasses.replace(opts, tracking_uri=uri)
    tracking = Tracking(uri, opts.artifact_location)
    tracking.preflight([(r, experiment_of(opts, r)) for r in records])   # writes nothing
    results = {r.run_id: new_result(store, r, opts, tracking) for r in records}
    from .. import parallel
    interrupted = parallel.replay_runs(
        store, records, results, opts, "mlflow",
        push_one=lambda r: push_run(Context(store, tracking, opts), store.run(r.run_id),
                                    results[r.run_id]),
        task=lambda r: (opts, r.run_id), work=work, poll=FOLLOW_POLL_SECS)
    summary = {"dry_run": False, "tracking_uri": tracking.shown,
               "runs": list(results.values()), "interrupted": interrupted}
    _print(opts, summary)
    return EXIT_OK if all(r["ok"] for r in results.values()) else EXIT_FAILED


def select_runs(store, run_ids):
    if run_ids:
        return [store.run(r) for r in dict.fromkeys(run_ids)]
    records = store.runs()
    if not records:
        raise BlackboxError(f"store {store.root} holds no runs: nothing to replay")
    return records


def _shown(uri):
    from .tracking import display_uri
    return display_uri(uri or "")


@dataclasses.dataclass
class Context:
    store: object
    tracking: Tracking
    opts: MlflowReplay


_WORKER: dict[tuple, "Context"] = {}   # a worker's store, client and options


def work(task, result):
    """One run's push in a worker process of --jobs (replay/parallel.py): the store and the
    MLflow client are opened once per worker."""
    opts, run_id = task
    key = (opts.store, opts.tracking_uri)
    if key not in _WORKER:
        check_uri(opts.tracking_uri)   # the worker's own MLFLOW_ALLOW_FILE_STORE
        _WORKER[key] = Context(Store.open(opts.store, access="replay"),
                               Tracking(opts.tracking_uri, opts.artifact_location),
                               dataclasses.replace(opts, progress=False))
    ctx = _WORKER[key]
    push_run(ctx, ctx.store.run(run_id), result)
    return result


# -- one run --------------------------------------------------------------------------------

def new_result(store, record, opts, tracking):
    exp = experiment_of(opts, record)
    dest = destination(opts.tracking_uri, exp)
    step, state = store.get_cursor(record.run_id, dest)
    return {"run_id": record.run_id, "experiment": exp, "destination": dest,
            "mlflow_run_id": state.get("mlflow_run_id") or tracking.found.get(record.run_id),
            "cursor_before": step, "cursor_after": step, "pushed_steps": 0,
            "pushed_points": 0, "first_step": None, "last_step": None, "system_samples": 0,
            "artifacts": {"histograms": 0, "images": 0, "media": 0, "console": 0,
                          "versions": 0, "files": 0},
            "params": 0, "warnings": [], "ok": True, "complete": False,
            "state": run_state(record), "recorded_step": None, "settled_step": None,
            "error": None}


def push_run(ctx, record, result):
    """Pushes what is new of one run, updating `result`; a failure MLflow gives is the run's
    (ReplayError: exit 1, its cursor where MLflow's data ends)."""
    try:
        _push(ctx, record, result)
    except BlackboxError as e:
        if not isinstance(e, ReplayError):
            raise
        result.update(ok=False, error=str(e))
        print(f"error: run {record.run_id}: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        msg = (f"MLflow did not take the push ({type(e).__name__}: "
               f"{str(e).strip().splitlines()[0][:500] if str(e).strip() else ''}); the "
               f"cursor stays at step {result['cursor_after']}")
        result.update(ok=False, error=msg)
        print(f"error: run {record.run_id}: {msg}", file=sys.stderr)


def _push(ctx, record, result):
    store, tracking, opts = ctx.store, ctx.tracking, ctx.opts
    client = tracking.client
    exp = result["experiment"]
    dest = result["destination"]
    step, state = store.get_cursor(record.run_id, dest)
    now = time.time()
    status = run_state(record, now)
    limit = settled_step(store, record, now)
    result.update(state=status, cursor_after=step, settled_step=limit,
                  recorded_step=recorded_step(store, record.run_id))
    mrun = _mlflow_run(ctx, record, exp, dest, step, state, status)
    result["mlflow_run_id"] = mrun
    _params(client, store, record, mrun, state, result)
    pushed_before = result["pushed_steps"]
    pending = state.get("pending")
    if pending:   # the window a killed replay was pushing: again, less what MLflow holds
        window = content.load_window(store, record.run_id, pending["lo"], pending["hi"] + 1)
        if window is not None:
            skip = held(client, mrun, set(window.keys), pending["lo"], pending["hi"])
            _push_window(ctx, record.run_id, mrun, window, state, result, skip)
        step = pending["hi"]
        state.pop("pending")
    lo = None if step is None else step + 1
    hi = None if limit is None else limit + 1
    bar = _bar(record.run_id, opts)
    try:
        for a, b in content.windows_of(store, record.run_id, lo, hi):
            window = content.load_window(store, record.run_id, a, b)
            if window is None:
                continue
            state["pending"] = {"lo": window.lo, "hi": window.hi}
            store.set_cursor(record.run_id, dest, step, state)   # moves it past the last one
            kill_point("mlflow-pending")
            _push_window(ctx, record.run_id, mrun, window, state, result)
            kill_point("mlflow-window")
            step = window.hi
            state.pop("pending")
            result["cursor_after"] = step
            if bar is not None:
                bar.update(window.steps)
    finally:
        if bar is not None:
            bar.close()
    if opts.artifacts:
        artifacts.push(client, store, record.run_id, mrun,
                       lambda: store.set_cursor(record.run_id, dest, step, state), state, result)
    system.push(client, store, record.run_id, mrun, dest, step, state, result)
    _end_of_chunk(ctx, record, mrun, status, limit, state, result)
    store.set_cursor(record.run_id, dest, step, state)
    kill_point("mlflow-cursor")
    result["cursor_after"] = step
    result["complete"] = status != "running"
    n = result["pushed_steps"] - pushed_before
    if not opts.json and (n or not opts.follow or result["complete"]):   # --follow: news only
        span = f"steps {result['first_step']}..{result['last_step']}" if n else "no new steps"
        live = ("; still recording: replay again for what it records next, or with --follow"
                if status == "running" and not opts.follow else "")
        arts = result["artifacts"]["versions"]
        arts = f", {arts} artifact version(s)" if arts else ""
        print(f"run {record.run_id}: pushed {n} step(s) ({span}, {status}{arts}) -> MLflow "
              f"run {mrun} in experiment {exp!r} at {tracking.shown}{live}")
        for w in result["warnings"]:
            print(f"  warning: {w}", file=sys.stderr)


def _mlflow_run(ctx, record, exp, dest, step, state, status):
    """The MLflow run of the recorded run: the cursor's, else the one tagged with its id,
    else a new one (named, tagged, started at the recorded start time)."""
    tracking = ctx.tracking
    mrun = state.get("mlflow_run_id")
    if mrun is None:
        exp_id = tracking.experiment_id(exp)
        mrun = tracking.found.get(record.run_id) or tracking.find_run(exp_id, record.run_id)
        if mrun is None:
            tags = content.tags_of(record, status)
            run = tracking.client.create_run(exp_id, start_time=content.ms(record.started_at),
                                             tags=tags, run_name=run_name(record))
            mrun = run.info.run_id
            kill_point("mlflow-created")
        state["mlflow_run_id"] = mrun
        ctx.store.set_cursor(record.run_id, dest, step, state)
    return mrun


def _params(client, store, record, mrun, state, result):
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH
    config = dict(record.config or {})
    for key, value in content.config_updates(store, record.run_id):
        config[key] = value
    params, cut = content.params_of(config, MAX_PARAM_VAL_LENGTH)
    done = state.setdefault("params", {})
    new, warnings = [], [w for k, w in cut.items() if k not in done]   # said once
    for key, text in params:
        digest = hashlib.sha1(text.encode()).hexdigest()[:16]
        if key not in done:
            new.append((key, text, digest))
        elif done[key] != digest:
            warnings.append(f"param {key!r} changed after it was pushed: MLflow keeps a "
                            f"param's first value (the config is in tfblackbox/config.json)")
    for i in range(0, len(new), MAX_PARAMS_TAGS_PER_BATCH):
        part = new[i:i + MAX_PARAMS_TAGS_PER_BATCH]
        client.log_batch(mrun, params=[Param(k, t) for k, t, _d in part])
        for k, _t, d in part:
            done[k] = d
    result["params"] = len(done)
    for w in warnings:
        if w not in result["warnings"]:
            result["warnings"].append(w)
    blob = json.dumps(config, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:16]
    if config and state.get("config") != digest:
        with tempfile.TemporaryDirectory(prefix="tfblackbox-mlflow-") as tmp:
            os.makedirs(os.path.join(tmp, "tfblackbox"))
            with open(os.path.join(tmp, "tfblackbox", "config.json"), "w") as f:
                f.write(json.dumps(config, indent=1, sort_keys=True, default=str))
            client.log_artifacts(mrun, tmp)
        state["config"] = digest


def _push_window(ctx, run_id, mrun, window, state, result, skip=None):
    from mlflow.entities import RunTag
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH
    client = ctx.tracking.client
    metrics = window.metrics(skip)
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(mrun, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
        if i == 0 and len(metrics) > MAX_METRICS_PER_BATCH:
            kill_point("mlflow-batch")   # part of a window logged
    if window.has_artifacts:
        tmp = tempfile.mkdtemp(prefix="tfblackbox-mlflow-")
        try:
            counts = content.write_window_artifacts(window, run_id, tmp)
            client.log_artifacts(mrun, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for k, v in counts.items():
            result["artifacts"][k] += v
        if counts["images"] and not state.get("images"):
            client.log_batch(mrun, tags=[RunTag("mlflow.loggedImages", "True")])
            state["images"] = True
    for w in content.renamed({t for t in window.tags}):
        if w not in result["warnings"]:
            result["warnings"].append(w)
    result["pushed_points"] += len(metrics)
    result["pushed_steps"] += window.steps
    if result["first_step"] is None:
        result["first_step"] = window.lo
    result["last_step"] = window.hi


def _end_of_chunk(ctx, record, mrun, status, limit, state, result):
    """The console as console.log (whole, when it grew), tags, status and end time."""
    from mlflow.entities import RunTag
    from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH
    client, store = ctx.tracking.client, ctx.store
    text = content.console_text(store, record.run_id, limit)
    if text is not None and len(text) != state.get("console_chars"):
        with tempfile.TemporaryDirectory(prefix="tfblackbox-mlflow-") as tmp:
            with open(os.path.join(tmp, "console.log"), "w", encoding="utf-8") as f:
                f.write(text)
            client.log_artifacts(mrun, tmp)
        state["console_chars"] = len(text)
        result["artifacts"]["console"] += 1
    tags = [RunTag(k, v[:MAX_TAG_VAL_LENGTH]) for k, v in
            content.tags_of(record, status).items()]
    for i in range(0, len(tags), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(mrun, tags=tags[i:i + MAX_PARAMS_TAGS_PER_BATCH])
    mstatus, end = content.status_of(record, status)
    if mstatus == "RUNNING":
        if state.get("status") not in (None, "running"):
            client.update_run(mrun, status="RUNNING")
    elif state.get("status") != status or state.get("end") != end:
        client.set_terminated(mrun, status=mstatus, end_time=end)
        state["end"] = end
    kill_point("mlflow-finish")
    state["status"] = status


def _bar(run_id, opts):
    if not opts.progress or opts.json:
        return None
    from tqdm import tqdm
    return tqdm(desc=run_id, unit="step", file=sys.stderr, leave=False, disable=None,
                mininterval=0.5)
