"""`replay --to wandb`: push recorded runs to W&B, incrementally, without TensorFlow.

One W&B run per recorded run (a stable id derived from the run id); each replay of a run pushes
one *chunk*: the steps after the run's cursor for this destination, one `log` call per step with
the recorded step and `_timestamp`. The cursor moves only after W&B's `finish()` returned and, in
offline mode, after the finished run dir was published into --wandb-dir by one rename
(offline_dir.py). The cursor state names a chunk before it is published, so a replay killed
between the rename and the cursor update is settled by the next one (`_reconcile`).

The command around it (which runs, --jobs, --follow's loop) is command.py's.
"""

import dataclasses
import math
import os
import sys
import time
import uuid

from tfblackbox.schema import BlackboxError
from tfblackbox.schema.errors import ReplayError
from tfblackbox.schema.kill_points import kill_point
from tfblackbox.schema.store.records import run_state
from tfblackbox.schema.store.windows import recorded_step

from . import times
from .artifacts import Artifacts
from .extras import Extras
from .naming import destination, project_of, wandb_run_id
from .system import System
from .plan_rows import iter_rows
from .timeline import plan_chunk


@dataclasses.dataclass
class Target:
    """Where one run's chunks go: the store it is read from, its record, the options, the
    --wandb-dir, and the cursor key of that destination."""
    store: object
    record: object
    opts: object                     # command.WandbReplay
    odir: object
    dest: str


# -- one run --------------------------------------------------------------------------------

def new_result(store, record, opts):
    step, _ = store.get_cursor(record.run_id, destination(opts, record))
    return {"run_id": record.run_id, "wandb_id": wandb_run_id(record.run_id),
            "project": project_of(opts, record), "entity": opts.entity,
            "destination": destination(opts, record), "cursor_before": step,
            "cursor_after": step, "pushed_steps": 0, "first_step": None, "last_step": None,
            "synced_rows": 0, "chunks": [], "ok": True, "complete": False,
            "state": run_state(record), "recorded_step": None, "settled_step": None,
            "late_rows": {"count": 0, "tags": []}, "refused_rows": {"count": 0, "tags": []},
            "artifacts": 0, "error": None}


def push_run(target, result):
    """Pushes what is new for one run (one chunk), updating `result`."""
    store, record, opts = target.store, target.record, target.opts
    step, state = _reconcile(store, record.run_id, target.dest, target.odir)
    now = time.time()
    status = run_state(record, now)
    plan = plan_chunk(store, record, step, state.get("wandb") or {}, now)
    extras = Extras.load(store, record.run_id, state, plan.limit)   # summary, console, ...
    system = System.load(store, record.run_id, state)   # environment, files, stats
    artifacts = Artifacts.load(store, record.run_id, wandb_run_id(record.run_id), state,
                               opts.artifacts)
    # of a live run: how far it has recorded, and how far that has settled (may be pushed)
    result.update(state=status, cursor_after=step, settled_step=plan.limit,
                  recorded_step=recorded_step(store, record.run_id))
    _report(result, record.run_id, "late", [(s[1].tags[0], s[1].step) for s in plan.late],
            "pushed after rows recorded later than them (a tfevents file read late): W&B "
            "shows them at later steps than a one-shot replay would")
    _report(result, record.run_id, "refused", [(tag, s) for s, tag, _w in plan.refused],
            "recorded at steps already pushed (log() with a step that went backwards): W&B "
            "refuses them, not pushed")
    if plan.refused:   # reported once: later chunks look only at what came after them
        ws = state.get("wandb") or {}
        state = dict(state, wandb=dict(ws, seen=plan.seen, wall=max(
            [ws.get("wall", -math.inf)] + [w for _s, _t, w in plan.refused])))
    new_status = status != "running" and state.get("status") != status
    if not plan.slots and not extras.pending and not system.pending and not \
            artifacts.pending and not (new_status and state.get("chunks")):
        if plan.refused:
            store.set_cursor(record.run_id, target.dest, step, state)
        result["complete"] = status != "running"
        return
    try:
        chunk = push_chunk(target, (step, state), plan, status, extras, system, artifacts)
    except ReplayError as e:
        result.update(ok=False, error=str(e))
        print(f"error: run {record.run_id}: {e}", file=sys.stderr)
        return
    n = chunk["steps"]
    result["pushed_steps"] += n
    result["synced_rows"] += chunk["synced"]
    result["artifacts"] += len(artifacts.logged)
    if n:
        result["first_step"] = chunk["lo"] if result["first_step"] is None else result["first_step"]
        result["last_step"] = chunk["hi"]
    result["cursor_after"] = chunk["cursor"]
    result["chunks"].append(chunk.get("dir") or chunk["chunk"])
    result["complete"] = status != "running"
    if not opts.json:
        where = chunk.get("dir") or f"{opts.entity + '/' if opts.entity else ''}{result['project']}"
        span = f"steps {chunk['lo']}..{chunk['hi']}" if n else "no new steps"
        synced = f", {chunk['synced']} from tfevents" if chunk["synced"] else ""
        synced += f", {len(artifacts.logged)} artifact version(s)" if artifacts.logged else ""
        live = ("; still recording: replay again for what it records next, or with --follow "
                "to keep pushing until it finishes" if status == "running" and not opts.follow
                else "")
        print(f"run {record.run_id}: pushed {n} step(s) ({span}{synced}, {status}) -> "
              f"{where}{live}")


def _report(result, run_id, kind, rows, why):
    """Counts rows W&B gets late or not at all in the result, and says so on stderr."""
    if not rows:
        return
    entry = result[f"{kind}_rows"]
    entry["count"] += len(rows)
    entry["tags"] = sorted(set(entry["tags"]) | {tag for tag, _s in rows})
    tags = sorted({tag for tag, _s in rows})
    print(f"warning: run {run_id}: {len(rows)} row(s) {why}; tags: {', '.join(tags[:8])}"
          f"{' ...' if len(tags) > 8 else ''}", file=sys.stderr)


def _reconcile(store, run_id, dest, odir):
    """Settles a chunk that a killed replay left pending: published -> cursor moves to it;
    not published -> forgotten (its staging dir is already gone)."""
    step, state = store.get_cursor(run_id, dest)
    pending = state.pop("pending", None)
    if pending is None:
        return step, state
    marker = pending.get("dir") and odir.published(pending["dir"], pending["chunk"])
    if marker:   # its step range is known from the published marker
        step, state = _committed(step, state, marker)
    store.set_cursor(run_id, dest, step, state)
    return step, state


def _committed(step, state, chunk):
    state = dict(state)
    state["status"] = chunk["status"]
    state["chunks"] = state.get("chunks", []) + [chunk.get("dir") or chunk["chunk"]]
    if "extras" in chunk:
        state["extras"] = chunk["extras"]   # events and console lines applied so far
    if "system" in chunk:
        state["system"] = chunk["system"]   # environments, files and stats pushed so far
    if "wandb" in chunk:
        state["wandb"] = chunk["wandb"]     # W&B steps, tfevents rows pushed (timeline.py)
    if "artifacts" in chunk:
        state["artifacts"] = chunk["artifacts"]   # artifact versions logged (artifacts.py)
    return chunk.get("cursor", chunk["hi"]), state


def push_chunk(target, cursor, plan, status, extras=None, system=None, artifacts=None):
    """Pushes the plan's rows (timeline.py), the extras (extras.py) and the system records
    (system.py) as one W&B chunk, from `cursor` = (step, state); returns the chunk record
    (its lo/hi/steps filled in as the rows are logged). Offline and online alike, the chunk
    is written by wandb in offline mode into a staging dir and its transaction log is then
    put on the training's clock (times.py); offline it is published into --wandb-dir, online
    uploaded with `wandb sync`."""
    import wandb
    from .media import MediaFactory
    store, record, opts, odir, dest = (target.store, target.record, target.opts, target.odir,
                                       target.dest)
    step, state = cursor
    extras = extras or Extras([], [], [], {}, {}, state.get("extras") or {})
    system = system or System.load(store, record.run_id, state)
    wstate = dict(state.get("wandb") or {})
    chunk = {"chunk": uuid.uuid4().hex, "run_id": record.run_id, "status": status,
             "steps": 0, "synced": 0, "lo": None, "hi": step, "cursor": step,
             "store": store.root}
    staging = odir.new_staging(record.run_id)
    run = None
    try:
        run = wandb.init(
            id=wandb_run_id(record.run_id), resume="allow", project=project_of(opts, record),
            entity=opts.entity, name=record.name or record.run_id, notes=record.notes,
            group=record.group, tags=list(record.tags) or None,
            config=extras.config(record.config), mode="offline", dir=staging,
            job_type=system.job_type,
            settings=_settings(wandb, extras.has_console, system.settings()))
        if extras.has_console:
            getattr(run, "_restore", lambda: None)()   # only the recorded lines: not ours
        sync_dir = run.settings.sync_dir
        if opts.mode == "offline":
            chunk["dir"] = odir.final_name(sync_dir, run.id)
            # named before it can exist: a kill after the rename is settled by _reconcile
            store.set_cursor(record.run_id, dest, step, dict(state, pending=chunk))
        kill_point("init")
        extras.start(run)
        walls = _log_rows(run, iter_rows(store, record.run_id, plan),
                          MediaFactory(os.path.join(staging, "scratch")), record.run_id,
                          opts.progress, chunk, extras, wstate, len(plan.slots))
        extras.finish(run)
        chunk["extras"] = extras.progress
        if artifacts is not None and artifacts.pending:
            # their files are named where the chunk will be (offline: once published)
            artifacts.publish(run, sync_dir, os.path.join(odir.path, chunk["dir"])
                              if opts.mode == "offline" else sync_dir)
            chunk["artifacts"] = artifacts.progress
            kill_point("artifacts")
        system.publish(run)   # before finish: wandb drops stats after the exit record
        chunk["system"] = system.progress
        run.summary.update({"tfblackbox/run_id": record.run_id, "tfblackbox/status": status})
        exit_code = {"finished": 0, "running": 0, "died": 1}.get(status, record.exit_code or 1)
        run.finish(exit_code=exit_code)
        run = None
        clock = times.RunClock.of(store, record)
        wstate["start"] = _chunk_start(clock, state, wstate, walls)
        times.retime(os.path.join(sync_dir, f"run-{wandb_run_id(record.run_id)}.wandb"),
                     clock, times.end_time(record, status, walls[1]), wstate["start"])
        wstate["seen"] = plan.seen
        chunk["wandb"] = wstate
        kill_point("finish")
        if opts.mode == "offline":
            odir.publish(sync_dir, chunk["dir"], chunk)
            kill_point("publish")
        else:
            upload(sync_dir, opts, project_of(opts, record))
        step, state = _committed(step, state, chunk)
        store.set_cursor(record.run_id, dest, step, state)
    except (KeyboardInterrupt, BlackboxError):
        _abandon(run, store, record.run_id, dest, step, state)
        raise
    except Exception as e:
        _abandon(run, store, record.run_id, dest, step, state)
        raise ReplayError(f"W&B did not take the chunk ({type(e).__name__}: {e}); the cursor "
                          f"stays at {step}") from e
    odir.discard(staging)
    return chunk


def _chunk_start(clock, state, wstate, walls):
    """The start time of a chunk's run record. The first chunk's is the training's start;
    a later chunk (a resumed W&B run) starts at its first row, after the chunk before it:
    `wandb sync` uploads the chunks of a run in the order of their start times."""
    if not state.get("chunks"):
        return clock.start
    first = walls[0] if walls[0] is not None else clock.start
    return max(first, wstate.get("start", clock.start) + 0.001)


def upload(sync_dir, opts, project):
    """Online: the finished chunk goes to W&B with `wandb sync`, W&B's own uploader of
    offline runs, so online and offline replays give W&B the same records."""
    import subprocess
    cmd = [sys.executable, "-m", "wandb", "sync", "--project", project]
    if opts.entity:
        cmd += ["--entity", opts.entity]
    done = subprocess.run(cmd + [sync_dir], capture_output=True, text=True)
    if done.returncode != 0:
        raise ReplayError(f"`wandb sync` of the chunk failed (exit {done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()[-2000:]}")


def _abandon(run, store, run_id, dest, step, state):
    if run is not None:
        try:
            run.finish(exit_code=1, quiet=True)
        except BaseException:
            pass
    try:
        store.set_cursor(run_id, dest, step, state)   # drop the pending chunk
    except BaseException:
        pass   # the next replay settles it


def _settings(wandb, console=False, training=None):
    # the replaying machine's metrics, code, git and console are not the training run's; the
    # console is "wrap" only so that wandb writes the recorded lines into output.log;
    # `training`: the run record's host and git as recorded (system.py)
    return wandb.Settings(x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
                          x_save_requirements=False, save_code=False, disable_git=True,
                          console="wrap" if console else "off", silent=True,
                          **(training or {}))


def _passed(wstate, group):
    """A tfevents group was pushed (or has nothing to push): its logdir goes on after it."""
    d = wstate.setdefault("dirs", {})
    d[group.dir] = list(max(tuple(d.get(group.dir, ("", -2))), group.end))


def _log_rows(run, rows, factory, run_id, progress, chunk, extras, wstate, total):
    """Logs the plan's rows at their W&B steps (timeline.py): a synced row at the next step, a
    logged row at its recorder step plus the synced rows before it. Updates `wstate` and
    returns (first, last) wall time of the rows logged (None, None for none)."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(desc=run_id, unit="step", file=sys.stderr, leave=False, disable=None,
                   mininterval=0.5, total=total)
    log, before, convert = run.log, extras.before, extras.convert
    named = hasattr(run, "_local_step")   # wandb names media files after this counter
    cursor = chunk["cursor"]
    nxt = wstate.get("next", 0 if cursor is None else cursor + 1)
    k = wstate.get("k", 0)
    first = last = None
    try:
        for n, (slot, group, i) in enumerate(rows):
            kind, key, t = slot
            if group is None:   # its rows make no W&B values (tensors only): passed over
                if kind == "log":
                    cursor = key
                else:
                    _passed(wstate, key)
                continue
            if kind == "log":
                before(run, key)
                row = convert(group.row(i, factory), key)
                w = max(key + k, nxt)
                cursor = key
                wstate["wall"] = max(wstate.get("wall", t), group.latest[i])
            else:
                row = group.row(i, factory)
                row["global_step"] = key.step
                row["_timestamp"] = key.stamp
                w = nxt
                k += 1
                chunk["synced"] += 1
                _passed(wstate, key)
            nxt = w + 1
            wstate["t"] = max(wstate.get("t", t), t)
            if named:
                run._local_step = w
            log(row, step=w, commit=True)   # flushed now, as wandb.log without a step
            if n == total // 2:
                kill_point("log")
            stamp = row["_timestamp"]
            first = stamp if first is None else min(first, stamp)
            last = stamp if last is None else max(last, stamp)
            if chunk["lo"] is None:
                chunk["lo"] = w
            chunk["hi"], chunk["steps"] = w, chunk["steps"] + 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    wstate.update(next=nxt, k=k)
    chunk["cursor"] = cursor
    return first, last
