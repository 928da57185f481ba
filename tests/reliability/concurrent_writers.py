"""Two to four training processes record into one store at once: different runs (into a store
that does not exist yet, or one that does), and the same run started together with
resume="allow" (new, or continuing a finished attempt). Every row of every process must be
stored, attempt numbers must be unique per run, and the store must verify.

Whether two inits collide is a matter of milliseconds, so two variants release their writers
without TensorFlow (rows through run.submit, quick to start) five times over."""

import os

from .common import (Checks, Child, error_line, exit_text, guarded, open_store, spans,
                     verify_cli)

GROUP = "concurrent-writers"
STEPS = 60
# name: (processes, same run, store exists, the run exists, rounds, without TensorFlow)
VARIANTS = {"fresh-store-3-runs": (3, False, False, False, 1, False),
            "existing-store-2-runs": (2, False, True, False, 1, False),
            "same-existing-run-4": (4, True, True, True, 1, False),
            "same-new-run-3x5-plain": (3, True, True, False, 5, True),
            "same-existing-run-4x5-plain": (4, True, True, True, 5, True)}


def concurrent(ws, variant):
    return guarded(GROUP, variant, _concurrent, ws, variant)


def _concurrent(ws, variant):
    n, same, store_exists, run_exists, rounds, plain = VARIANTS[variant]
    c = Checks(GROUP, variant)
    d = ws.new(f"concurrent-{variant}")
    store = os.path.join(d, "store")
    if store_exists:
        _prepare(store, run_exists)
    writers = {}   # "r-i" -> (run id, attempt or None)
    for r in range(rounds):
        shared = "shared" if run_exists else f"new{r}"   # a new run is new in each round
        runs = [shared if same else f"run{r}-{i}" for i in range(n)]
        names = [f"{r}-{i}" for i in range(n)]
        children = [Child.worker(d, "train", store, "--run-id", runs[i], "--steps", STEPS,
                                 "--flush-every", 20, "--prefix", f"w{names[i]}/", "--go",
                                 *(["--plain"] if plain else []), name=f"writer{names[i]}")
                    for i in range(n)]
        try:
            ready = [ch.wait_for("ready", timeout=180) for ch in children]
            if not c.check(all(ready), "a writer never got ready"):
                return c.result()
            for ch in children:   # released together: their inits race
                ch.send("go")
            codes = [ch.wait() for ch in children]
        finally:
            for ch in children:
                ch.close()
        for name, run_id, ch, code in zip(names, runs, children, codes):
            c.check(code == 0, f"writer {name}: {exit_text(code)}: {error_line(ch.stderr())}")
            e = ch.last("init-done")
            writers[name] = (run_id, int(e.args[0]) if e else None)
    if same:
        for run_id in sorted({r for r, _a in writers.values()}):
            got = sorted(a for r, a in writers.values() if r == run_id and a is not None)
            c.check(len(set(got)) == len(got), f"writers of run {run_id!r} got attempts {got}")
    s, err = open_store(store)
    if c.check(s is not None, err or ""):
        try:
            _rows(c, s, writers)
        finally:
            s.close()
    verify_cli(c, store)
    c.lost_secs = 0.0
    return c.result()


def _prepare(store, run_exists):
    from tfblackbox import recorder
    from tfblackbox.schema import Store
    if run_exists:
        recorder.init(store=store, run_id="shared")
        recorder.finish()
    else:
        Store.create(store).close()


def _rows(c, s, writers):
    for name, (run_id, attempt) in writers.items():
        if not s.has_run(run_id):
            c.check(False, f"run {run_id} of writer {name} is not in the store")
            continue
        t = s.read(run_id, "scalars", latest_only=False)   # the same run: every attempt's rows
        mine = [(st, a) for st, tag, a in zip(t["step"].to_pylist(), t["tag"].to_pylist(),
                                              t["attempt"].to_pylist()) if tag == f"w{name}/fed"]
        steps = sorted(st for st, _a in mine)
        c.check(steps == list(range(STEPS)), f"writer {name}: steps {spans(steps)} of "
                                             f"0-{STEPS - 1} stored")
        wrong = {a for _st, a in mine} - {attempt}
        c.check(not wrong, f"writer {name} (attempt {attempt}): rows carry attempt(s) "
                           f"{sorted(wrong)}")
    for run_id in sorted({r for r, _a in writers.values()}):
        if s.has_run(run_id):
            nums = [w.attempt for w in s.writers(run_id)]
            c.check(len(nums) == len(set(nums)), f"run {run_id}'s writers table holds attempts "
                                                 f"{nums}")


def cases(ws, rng, quick):
    variants = (("fresh-store-3-runs", "same-existing-run-4x5-plain") if quick else
                tuple(VARIANTS))
    return [(v, lambda v=v: concurrent(ws, v)) for v in variants]
