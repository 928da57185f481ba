"""kill -9 of `replay --to wandb --mode offline` at its named points (TFBLACKBOX_TEST_KILL_AT:
init, log, finish, publish) and at random instants, then a re-run: every step of every run
lands in exactly one published offline-run dir (read back from the .wandb files), and no
staging is left behind.

The store holds two runs recorded by real training (scalars, a histogram, an image a step), so
a kill can fall in the first run's chunk, between the runs, or in the second one.
"""

import collections
import glob
import os
import shutil
import time

from .common import (Checks, Child, child_env, cli, cli_command, error_line, exit_text,
                     guarded, has_traceback, open_store)

GROUP = "kill-replay-wandb"
RUNS = ("alpha", "beta")
STEPS = 100
POINTS = ("init", "log", "finish", "publish")


def recorded(ws):
    return ws.cached("wandb-store", lambda: _record(ws))


def _record(ws):
    """The store (two finished runs), the steps of each, and one clean replay's duration."""
    d = ws.new("wandb-recorded")
    store = os.path.join(d, "store")
    for run_id in RUNS:
        child = Child.worker(d, "train", store, "--run-id", run_id, "--steps", STEPS,
                             "--flush-every", 50, "--image", name=f"train-{run_id}")
        code = child.wait()
        child.close()
        if code != 0:
            raise RuntimeError(f"recording run {run_id} failed: {exit_text(code)}: "
                               f"{error_line(child.stderr())}")
    s, err = open_store(store)
    if s is None:
        raise RuntimeError(err)
    expected = {}
    for run_id in RUNS:
        steps = set()
        for table in ("scalars", "histograms", "media"):
            steps.update(s.read(run_id, table, columns=["step"])["step"].to_pylist())
        expected[run_id] = sorted(steps)
    s.close()
    wdir = os.path.join(d, "wandb")
    t0 = time.monotonic()
    p = cli(*replay_args(store, wdir))
    secs = time.monotonic() - t0
    c = Checks(GROUP, "clean-replay")
    if c.check(p.returncode == 0 and not has_traceback(p.stderr),
               f"the clean replay: {exit_text(p.returncode)}: {error_line(p.stderr)}"):
        check_published(c, wdir, expected)
    c.note(f"{sum(map(len, expected.values()))} steps in {len(RUNS)} runs, replayed in "
           f"{secs:.1f} s")
    c.lost_secs = 0.0
    return store, expected, secs, c.result()


def replay_args(store, wdir):
    return ["replay", "--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir",
            wdir, "--no-progress"]


def check_published(c, wdir, expected):
    """Each expected step of each run is in exactly one published offline-run dir."""
    import wandb_log
    staging = os.path.join(wdir, ".tfblackbox-staging")
    left = os.listdir(staging) if os.path.isdir(staging) else []
    c.check(not left, f"staging holds {len(left)} entr(y/ies) after the re-run: {left[:3]}")
    got = collections.defaultdict(list)
    dirs = sorted(n for n in os.listdir(wdir) if n.startswith("offline-run-"))
    for name in dirs:
        files = glob.glob(os.path.join(wdir, name, "run-*.wandb"))
        if not c.check(len(files) == 1, f"{name} holds {len(files)} run-*.wandb files"):
            continue
        c.check(os.path.exists(os.path.join(wdir, name, "tfblackbox-chunk.json")),
                f"{name} has no tfblackbox-chunk.json")
        rec = wandb_log.run_record(files[0])
        got[rec.run_id if rec else "?"] += [r["_step"] for r in wandb_log.history(files[0])]
    for run_id, steps in expected.items():
        pushed = got.pop(run_id, [])
        counts = collections.Counter(pushed)
        dup = sorted(s for s, k in counts.items() if k > 1)
        missing = sorted(set(steps) - set(counts))
        extra = sorted(set(counts) - set(steps))
        c.check(not dup and not missing and not extra,
                f"run {run_id}: {len(dup)} step(s) pushed twice {dup[:5]}, {len(missing)} "
                f"never {missing[:5]}, {len(extra)} not in the store {extra[:5]}")
    c.check(not got, f"published dirs of runs not in the store: {sorted(got)}")
    return dirs


def kill(ws, n, point=None, fracs=()):
    name = f"point-{point}" if point else f"random#{n}"
    return guarded(GROUP, name, _kill, ws, name, point, fracs)


def _kill(ws, name, point, fracs):
    """Kills one replay at `point`, or one replay per fraction of a clean replay's duration;
    then re-runs it to the end and checks the published dirs."""
    base, expected, secs, _clean = recorded(ws)
    c = Checks(GROUP, name)
    d = ws.new(f"wandb-{name.replace('#', '-')}")
    try:
        _kill_and_rerun(c, base, expected, secs, d, point, fracs)
    finally:
        ws.discard(d)
    c.lost_secs = 0.0
    return c.result()


def _kill_and_rerun(c, base, expected, secs, d, point, fracs):
    # a replay that ends before its kill tests nothing: then again, sooner, on a fresh copy
    for attempt in range(3):
        store, wdir = os.path.join(d, f"store{attempt}"), os.path.join(d, f"wandb{attempt}")
        shutil.copytree(base, store)
        landed = _kills(c, store, wdir, d, point, [f * secs / 2 ** attempt for f in fracs])
        if point or landed:
            break
        c.note("the replay had ended before the kill: again with half the delay")
    p = cli(*replay_args(store, wdir), "--json")
    if c.check(p.returncode == 0 and not has_traceback(p.stderr),
               f"the re-run: {exit_text(p.returncode)}: {error_line(p.stderr)}"):
        dirs = check_published(c, wdir, expected)
        c.note(f"{len(dirs)} published dir(s)")


def _kills(c, store, wdir, d, point, delays):
    """Kills the replay at `point`, or one replay after each delay; False if the last one had
    ended by itself."""
    argv = cli_command() + replay_args(store, wdir)
    if point:
        child = Child(argv, d, env=child_env(TFBLACKBOX_TEST_KILL_AT=point), name="replay")
        code = child.wait(300)
        child.close()
        return c.check(code == -9, f"the replay was to kill itself at {point!r}: "
                                   f"{exit_text(code)}: {error_line(child.stderr())}")
    alive = True
    for i, delay in enumerate(delays):
        child = Child(argv, d, env=child_env(), name=f"replay-{i}")
        time.sleep(delay)
        alive = child.kill()
        child.close()   # also ends the wandb-core it started
        c.note(f"killed at {delay:.1f} s" + ("" if alive else " (it had ended)"))
    return alive


def cases(ws, rng, quick):
    out = [("clean-replay", lambda: guarded(GROUP, "clean-replay",
                                            lambda: recorded(ws)[3]))]
    points = ("log", "publish") if quick else POINTS
    for p in points:
        out.append((f"point-{p}", lambda p=p: kill(ws, 0, point=p)))
    # a clean replay's duration varies with the machine's load: aim within its first 80 %
    randoms = [[rng.uniform(0.1, 0.8)] for _ in range(1 if quick else 6)]
    if not quick:
        randoms.append(sorted(rng.uniform(0.1, 0.8) for _ in range(2)))   # killed twice
    for n, fracs in enumerate(randoms, 1):
        out.append((f"random#{n}", lambda n=n, fracs=fracs: kill(ws, n, fracs=fracs)))
    return out
