"""kill -9 of a training process at random instants: while `recorder.init` creates the store,
during a flush, during `finish()`, and anywhere while it trains (with and without DumpHook).

After each kill: Store.open works, `tfblackbox verify` exits 0, `recorder.init(resume="allow")`
on the same path works (and the store verifies again), and the rows lost are only rows buffered
since the last flush the child saw complete, counted in seconds of training.
"""

import os
import statistics
import time

from .common import (Checks, Child, guarded, flushed_step, lost_training_secs, open_store,
                     reinit, spans, steps_in, verify_cli, exit_text, tail)

GROUP = "kill-training"
RUN = "victim"
FLUSH_EVERY = 20
RANDOM_WINDOW = 2.5     # seconds of training in which a "random" kill falls
FINISH_STEPS = 70       # 3 flushes, then 10 steps still buffered when finish() starts
PHASES = {"init": ("init-start", "init-done"), "flush": ("flush-start", "flushed"),
          "finish": ("finish-start", "finish-done")}


def calibration(ws):
    """A clean run (a case of its own) that also measures how long init, a flush and finish
    take here, so kills can be aimed inside them."""
    return ws.cached("kill-training-calibration", lambda: _calibrate(ws))


def _calibrate(ws):
    c = Checks(GROUP, "clean-run")
    d = ws.new("calibration")
    store = os.path.join(d, "store")
    child = Child.worker(d, "train", store, "--run-id", RUN, "--steps", FINISH_STEPS,
                         "--flush-every", FLUSH_EVERY)
    code = child.wait()
    child.close()
    ev = {name: child.all(name) for name in ("init-start", "init-done", "flush-start",
                                             "flushed", "finish-start", "finish-done")}
    timing = {"init": 0.05, "flush": 0.02, "finish": 0.2}
    if c.check(code == 0 and ev["finish-done"], f"the clean run: {exit_text(code)}: "
               f"{tail(child.stderr())}"):
        timing = {
            "init": ev["init-done"][0].t - ev["init-start"][0].t,
            "flush": statistics.median(b.t - a.t for a, b in zip(ev["flush-start"], ev["flushed"])),
            "finish": ev["finish-done"][0].t - ev["finish-start"][0].t}
        store_obj, err = open_store(store)
        if c.check(store_obj is not None, err or ""):
            got = steps_in(store_obj, RUN, tag="fed")
            c.check(got == list(range(FINISH_STEPS)), f"the clean run stored steps {spans(got)}")
            store_obj.close()
        verify_cli(c, store)
    c.note("init %.0f ms, flush %.0f ms, finish %.0f ms" % tuple(
        1000 * timing[k] for k in ("init", "flush", "finish")))
    c.lost_secs = 0.0
    return c.result(), timing


def kill(ws, kind, n, frac, flush_index=2):
    """One kill: `kind` is init, flush, finish, random or dump; it falls `frac` of the way
    through that phase (of RANDOM_WINDOW seconds of training for random and dump)."""
    return guarded(GROUP, f"{kind}#{n}", _kill, ws, kind, n, frac, flush_index)


def _kill(ws, kind, n, frac, flush_index):
    c = Checks(GROUP, f"{kind}#{n}")
    d = ws.new(f"kill-{kind}-{n}")
    store = os.path.join(d, "store")
    args = ["train", store, "--run-id", RUN, "--flush-every", FLUSH_EVERY]
    if kind == "finish":
        args += ["--steps", FINISH_STEPS]
    if kind == "dump":
        args += ["--dump", 2]
    child = Child.worker(d, *args)
    try:
        if kind in PHASES:
            _result, timing = calibration(ws)
            start, end = PHASES[kind]
            target = flush_index * FLUSH_EVERY - 1
            pred = (lambda e: int(e.args[0]) == target) if kind == "flush" else None
            delay = frac * timing[kind]
        else:
            start, end, pred, delay = "train-start", None, None, frac * RANDOM_WINDOW
        event = child.wait_for(start, pred, timeout=180)
        if event is None:
            child.wait(5)
            c.check(False, f"the child never reached {start}: {exit_text(child.proc.poll())}: "
                           f"{tail(child.stderr())}")
            return c.result()
        time.sleep(max(0.0, event.received + delay - time.monotonic()))
        alive = child.kill()
    finally:
        child.close()
    inside = end is not None and child.wait_for(end, pred, timeout=0) is None
    where = f"{delay * 1000:.0f} ms after {start}" + (
        "" if end is None else " (inside it)" if inside else " (it had ended)")
    c.note(f"killed {where}" + ("" if alive else "; the child had already exited"))
    _after_kill(c, child, store, kind)
    return c.result()


def _after_kill(c, child, store, kind):
    if kind == "init":
        # killed while creating: the path may hold nothing, or a half-made store; what must
        # work is the next init on it, and then the store
        if not os.path.exists(store):
            c.note("the store directory did not exist yet")
        else:
            s, err = open_store(store)
            c.note("before the next init Store.open " + ("worked" if s else f"failed: {err}"))
            if s:
                s.close()
        if reinit(c, store, RUN):
            s, err = open_store(store)
            if c.check(s is not None, f"after the next init: {err}"):
                s.close()
            verify_cli(c, store, "after the next init")
        c.lost_secs = 0.0
        return
    s, err = open_store(store)
    if not c.check(s is not None, f"after the kill: {err}"):
        return
    try:
        _compare_rows(c, child, s)
    finally:
        s.close()
    verify_cli(c, store, "after the kill")
    if reinit(c, store, RUN):
        verify_cli(c, store, "after the next init")


def _compare_rows(c, child, s):
    """Every step the child saw flushed is stored (scalars with their values, histograms);
    what is missing is counted in seconds of training."""
    flushed = flushed_step(child)
    t = s.read(RUN, "scalars", columns=["step", "tag", "value"])
    fed = {st: v for st, g, v in zip(t["step"].to_pylist(), t["tag"].to_pylist(),
                                     t["value"].to_pylist()) if g == "fed"}
    hist = set(steps_in(s, RUN, "histograms", tag="weights"))
    lost_flushed = [i for i in range(flushed + 1) if i not in fed]
    lost_hist = [i for i in range(flushed + 1) if i not in hist]
    c.check(not lost_flushed, f"scalar rows of flushed steps are missing: {spans(lost_flushed)}")
    c.check(not lost_hist, f"histogram rows of flushed steps are missing: {spans(lost_hist)}")
    wrong = [st for st, v in fed.items() if v != float(st)]
    c.check(not wrong, f"stored values differ from what was logged at steps {spans(wrong)}")
    c.lost_secs, missing = lost_training_secs(child, fed)
    done = len(child.all("step"))
    c.note(f"{done} steps ran, flushed through {flushed}, {len(fed)} stored"
           + (f", lost {spans(missing)} ({c.lost_secs:.2f} s)" if missing else ""))


def cases(ws, rng, quick):
    """(name, thunk) pairs of the group, kill instants drawn from rng."""
    counts = ({"init": 2, "flush": 2, "finish": 2, "random": 1, "dump": 1} if quick else
              {"init": 6, "flush": 6, "finish": 5, "random": 4, "dump": 2})
    out = [("clean-run", lambda: calibration(ws)[0])]
    for kind, k in counts.items():
        for n in range(1, k + 1):
            # init: most of its time is git and environment facts after the store exists, so
            # its instants lean to the start, where the store is created
            frac = (rng.uniform(0.0, 1.0) ** (2 if kind == "init" else 1) if kind in PHASES
                    else rng.uniform(0.05, 1.0))
            idx = rng.randint(1, 4)
            out.append((f"{kind}#{n}", lambda kind=kind, n=n, frac=frac, idx=idx:
                        kill(ws, kind, n, frac, idx)))
    return out
