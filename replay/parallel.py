"""`replay --jobs N`: runs replayed by N worker processes at once, each run by one worker.

The workers run the very function a replay runs for one run (W&B's `push_run`, TensorBoard's
`export_run`, MLflow's `push_run`), in processes of their own, forked from a fork server that
imported the replay's modules once (never from the replay process itself: wandb's service,
pyarrow's threads and the catalog's connections are not fork-safe), so the cursor contract
is the one of a replay of one run: a worker killed at any point leaves its run's cursor
where a killed replay leaves it, and the next replay settles it. A worker that dies
(kill -9) breaks the pool: every run not finished by then is reported failed (exit 1), each
with its cursor where its push stopped, and the next replay goes on from there.

Progress: a line per run as it ends (`[k/N] run R: ...`) and the steps pushed in all, on
stderr (a bar on a terminal); `--json` prints the usual summary only.
"""

import concurrent.futures as cf
import multiprocessing
import sys
import time

STEP_KEYS = ("pushed_steps", "events")   # how each destination counts what it wrote

# What each destination's workers import, imported once by the fork server instead of by each
# worker (wandb, pyarrow, mlflow: ~0.6 s of CPU a worker; a module not installed is skipped).
# The first module is the one that holds the workers' function. wandb's: the parts of it its
# first chunk imports lazily too.
PRELOAD = {
    "wandb": ("tfblackbox.replay.wandb.command", "wandb", "tfblackbox.replay.wandb.media",
              "wandb.apis.public", "wandb.sdk.launch", "requests", "yaml", "psutil",
              "opentelemetry.exporter.otlp.proto.http.metric_exporter",
              "opentelemetry.exporter.otlp.proto.http._log_exporter"),
    "mlflow": ("tfblackbox.replay.mlflow.push", "mlflow.tracking", "mlflow.entities"),
    "tensorboard": ("tfblackbox.replay.tensorboard.export",),
}


def start_early(destination):
    """Starts the fork server of `destination`'s workers now (the CLI calls this before it
    imports the store's modules), so that it imports the workers' modules while this process
    imports its own, opens the store and reads the runs' cursors: done one after the other,
    on 2 cores, that was 2-2.5 s with one core idle before the first worker started."""
    preload = PRELOAD.get(destination)
    if preload is not None and _context(preload).get_start_method() == "forkserver":
        from multiprocessing import forkserver
        forkserver.ensure_running()


def run_jobs(jobs, tasks, work, results, follow=False, poll=10.0, progress=True,
             preload=()):
    """tasks: [(run id, task)]; work(task, result) -> result, a top-level function (it is
    pickled to the workers); results: {run id: result dict}, updated in place. With
    `follow`, a run whose result is ok but not complete is given to a worker again after
    `poll` seconds, until it completes (or Ctrl-C). `preload`: modules imported once by the
    fork server the workers are forked from (PRELOAD), where the platform has one; else
    workers are spawned. A fork server already started (start_early) is used as it is."""
    total = len(tasks)
    done = 0
    bar = _bar(total) if progress else None
    ctx = _context(preload)
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        running = {pool.submit(work, task, results[key]): (key, task) for key, task in tasks}
        later = []     # (time, key, task) of runs to push again (--follow)
        try:
            while running or later:
                now = time.monotonic()
                for item in [x for x in later if x[0] <= now]:
                    later.remove(item)
                    running[pool.submit(work, item[2], results[item[1]])] = item[1:]
                if not running:
                    time.sleep(min(0.5, max(0.0, min(x[0] for x in later) - now)))
                    continue
                finished, _ = cf.wait(running, timeout=0.5,
                                      return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    key, task = running.pop(fut)
                    try:
                        results[key] = fut.result()
                    except cf.process.BrokenProcessPool as e:
                        _failed(results[key], key, f"its replay worker died ({e}); replay "
                                                   f"again to go on from its cursor")
                    except Exception as e:
                        _failed(results[key], key, f"{type(e).__name__}: {e}")
                    r = results[key]
                    if follow and r.get("ok") and not r.get("complete"):
                        later.append((time.monotonic() + poll, key, task))
                        continue
                    done += 1
                    _report(bar, done, total, key, r, results, progress)
        except BaseException:
            for fut in running:
                fut.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
    return results


def replay_runs(store, records, results, opts, destination, push_one, task, work, poll):
    """Each run's push for `replay --to <destination>`, the same for every destination: with
    `opts.jobs` > 1 by worker processes (each gets `task(record)` and runs `work`), longest
    runs first; else here, one run after another (`push_one(record)`). With `opts.follow`,
    runs that are ok but not complete go again every `poll` seconds until they are, and
    Ctrl-C ends it (every finished chunk is kept). Returns whether Ctrl-C ended a --follow."""
    try:
        if opts.jobs > 1:
            run_jobs(opts.jobs, [(r.run_id, task(r)) for r in longest_first(store, records)],
                     work, results, follow=opts.follow, poll=poll,
                     progress=opts.progress and not opts.json, preload=PRELOAD[destination])
            return False
        todo = list(records)
        while todo:
            for record in todo:
                push_one(record)
            todo = [r for r in todo if opts.follow and results[r.run_id]["ok"]
                    and not results[r.run_id]["complete"]]
            if todo:
                time.sleep(poll)
    except KeyboardInterrupt:
        if not opts.follow:
            raise
        return True
    return False


def longest_first(store, records):
    """The runs in the order their workers should get them: the most stored bytes first
    (catalog segment sizes: one catalog read), so that the last runs to start are short
    ones. In the given order, a long run that came last would keep one worker busy alone
    after every other run was done, the other cores idle."""
    size = {}
    for seg in store.segments():
        size[seg.run_id] = size.get(seg.run_id, 0) + seg.size_bytes
    return sorted(records, key=lambda r: -size.get(r.run_id, 0))   # stable among equals


def _context(preload):
    """A fork server started clean (no thread, no open catalog or wandb service of ours),
    which imports `preload` once; each worker is forked from it, so it starts with them."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    return ctx


def _failed(result, key, error):
    """A run whose worker raised or died: failed (exit 1), said on stderr whatever the
    progress setting, as a replay in one process says it."""
    result.update(ok=False, error=error)
    print(f"error: run {key}: {error}", file=sys.stderr)


def steps_of(result):
    return next((result.get(k) or 0 for k in STEP_KEYS if k in result), 0)


def _bar(total):
    from tqdm import tqdm
    return tqdm(total=total, desc="runs", unit="run", file=sys.stderr, disable=None,
                leave=True)


def _report(bar, done, total, key, result, results, progress):
    if not progress:
        return
    steps = sum(steps_of(r) for r in results.values())
    what = (f"{steps_of(result)} step(s)" if result.get("ok")
            else f"failed: {result.get('error')}")
    line = f"[{done}/{total}] run {key}: {what}; {steps} step(s) in all"
    if bar is not None and not bar.disable:
        bar.set_postfix_str(f"{steps} steps")
        bar.update(1)
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)
