"""Issue 23: the disk fills while DumpHook dumps, stays full, then only part of the space comes
back. Training with SummaryHook (21 scalar tags, a histogram) and DumpHook (every 5 steps) on a
20 MB tmpfs: the case fills it, training goes on FULL_SECS, then BACK bytes are freed and
training goes on AFTER_STEPS steps and finishes. The dumps held meanwhile do not fit in what
came back, so:

- every metric row logged after the space returned must be in the store (metric tables are
  written before bulk ones),
- what the writer holds for unwritten rows stays within `max_unwritten_bytes` (its own count
  and Arrow's allocated bytes, sampled every 10 ms in the training process),
- the bulk rows dropped past that bound are counted in the catalog per attempt and table and
  shown by `tfblackbox show` (text and --json), no metric row among them,
- finish() does not raise and the script exits 0; the store verifies.
"""

import json
import os

from .common import (Checks, Child, cli, error_line, exit_text, has_traceback,
                     lost_training_secs, not_run, open_store, spans, verify_cli)

GROUP, CASE = "disk-full", "dumps-space-returns"
SIZE, BACK = "20m", 15 << 20          # the file system, and what comes back after FULL_SECS
FULL_SECS, PHASE1, AFTER_STEPS = 5.0, 30, 800
SCALARS, DUMP_EVERY = 21, 5
WIDTH, NOISE = 256, 1 << 16   # ~1.3 MB of tensors a dumped step, 256 KiB of it random
BOUND = 8 << 20                       # max_unwritten_bytes of the case (the default is larger)
# Arrow's allocations beyond what the writer counts as held: the segment being encoded and
# pyarrow's own buffers
ARROW_SLACK = 12 << 20
METRIC_TABLES = ("scalars", "histograms", "log_values", "console", "run_events")


def dumps_space_returns(ws):
    from .common import guarded
    return guarded(GROUP, CASE, _case, ws)


def _case(ws):
    from .disk import fill, tmpfs
    c = Checks(GROUP, CASE)
    d = ws.new(CASE)
    mnt = os.path.join(d, "mnt")
    with tmpfs(mnt, SIZE) as why:
        if why:
            return not_run(GROUP, CASE, why)
        store, filler = os.path.join(mnt, "store"), os.path.join(mnt, "filler")
        child = Child.worker(
            d, "train", store, "--run-id", "full", "--steps", 0, "--flush-every", 0,
            "--flush-secs", 1.0, "--pause-at", PHASE1, "--pause-after-secs", FULL_SECS,
            "--steps-after-pause", AFTER_STEPS, "--dump", DUMP_EVERY, "--scalars", SCALARS,
            "--width", WIDTH, "--noise", NOISE, "--max-unwritten-bytes", BOUND, "--sample-held")
        try:
            if not _pause(c, child, lambda i: i == PHASE1 - 1, "the disk filled"):
                return c.result()
            filled = fill(filler)
            child.send("go")
            freed_at = _pause(c, child, lambda i: i >= PHASE1, f"{FULL_SECS} s of full disk")
            if not freed_at:
                return c.result()
            os.truncate(filler, max(0, filled - BACK))
            child.send("go")
            code = child.wait()
        finally:
            child.close()
        c.note(f"filled {filled >> 10} KiB, then freed {BACK >> 20} MiB after step {freed_at}")
        c.check(code == 0, f"training: {exit_text(code)}: {error_line(child.stderr())}")
        c.check(child.last("finish-done") is not None and child.last("finish-error") is None,
                "finish() raised (it must log, record what was lost and return)")
        _held(c, child)
        s, err = open_store(store)
        if c.check(s is not None, f"afterwards: {err}"):
            try:
                _rows(c, child, s, int(freed_at))
                sizes = {}
                for g in s.segments("full"):
                    sizes[g.table] = sizes.get(g.table, 0) + g.size_bytes
                c.note("stored: " + ", ".join(f"{t} {n >> 10} KiB" for t, n in sizes.items()))
                _dumps(c, s, int(freed_at))
                _losses(c, s, store)
            finally:
                s.close()
        verify_cli(c, store, "afterwards")
    ws.discard(d)
    return c.result()


def _pause(c, child, pred, what):
    """The step of the next pause matching pred(step), or None (a failed check)."""
    e = child.wait_for("pause", lambda e: pred(int(e.args[0])), timeout=300)
    c.check(e is not None, f"training never paused for {what}: "
                           f"{exit_text(child.proc.poll())}: {error_line(child.stderr())}")
    return e and e.args[0]


def _rows(c, child, s, freed_at):
    t = s.read("full", "scalars", columns=["step", "tag"])
    per_step = {}
    for step, tag in zip(t["step"].to_pylist(), t["tag"].to_pylist()):
        per_step.setdefault(step, set()).add(tag)
    logged = sorted(int(e.args[0]) for e in child.all("step"))
    after = [i for i in logged if i > freed_at]
    full = [i for i in logged if PHASE1 <= i <= freed_at]
    missing = [i for i in after if len(per_step.get(i, ())) != SCALARS]
    stored_after = sum(len(per_step.get(i, ())) for i in after)
    c.check(after and not missing,
            f"metric rows logged after the space returned are not all stored: "
            f"{stored_after} of {SCALARS * len(after)} (steps {spans(missing)} lack some)")
    before = [i for i in logged if i < PHASE1 and len(per_step.get(i, ())) != SCALARS]
    c.check(not before, f"rows stored before the disk filled are gone: {spans(before)}")
    c.lost_secs, _missing = lost_training_secs(child, [i for i in per_step
                                                        if len(per_step[i]) == SCALARS])
    kept = sum(len(per_step.get(i, ())) for i in full)
    c.note(f"scalar rows stored: after the space returned {stored_after} of "
           f"{SCALARS * len(after)}; logged while full {kept} of {SCALARS * len(full)}")


def _dumps(c, s, freed_at):
    """Every dumped step in the store is whole and decodes: dropping held dumps took the
    rows encoded against them, and the step's run row, along."""
    from tfblackbox.schema.codecs.tfdbg_v1_decode import read_debug_tensors
    runs = s.read("full", "tfdbg_v1_runs", columns=["step", "run_key", "tensor_count"])
    tensors = read_debug_tensors(s, "full", columns=["run_key", "event"])
    bad = [t["event"] for t in tensors if not isinstance(t["event"], bytes)]
    c.check(not bad, f"{len(bad)} stored debug tensors do not decode (their chain lost rows): "
                     f"{bad[:1]}")
    per_run = {}
    for t in tensors:
        per_run[t["run_key"]] = per_run.get(t["run_key"], 0) + 1
    expected = dict(zip(runs["run_key"].to_pylist(), runs["tensor_count"].to_pylist()))
    partial = {k: (per_run.get(k, 0), n) for k, n in expected.items() if per_run.get(k, 0) != n}
    orphans = set(per_run) - set(expected)
    c.check(not partial, f"dumped steps stored without all their tensors (stored, dumped): "
                         f"{dict(list(partial.items())[:3])}")
    c.check(not orphans, f"{len(orphans)} dumped steps have tensors but no tfdbg_v1_runs row")
    c.note("dumped steps stored: {} before the disk filled, {} while full, {} after"
           .format(*_phases(runs["step"].to_pylist(), freed_at)))


def _phases(steps, freed_at):
    return (sum(i < PHASE1 for i in steps), sum(PHASE1 <= i <= freed_at for i in steps),
            sum(i > freed_at for i in steps))


def _held(c, child):
    e = child.last("held")
    if not c.check(e is not None, "the training did not report what its writer held"):
        return
    writer, arrow, bound = (int(x) for x in e.args)
    c.note(f"held at most {writer / 2**20:.1f} MiB by the writer's count, Arrow "
           f"{arrow / 2**20:.1f} MiB; bound {BOUND / 2**20:.0f} MiB")
    c.check(bound == BOUND, f"the writer's bound is {bound}, not max_unwritten_bytes={BOUND}")
    c.check(writer <= BOUND, f"the writer held {writer} bytes for unwritten rows, over its "
                             f"bound of {BOUND}")
    c.check(arrow <= BOUND + ARROW_SLACK,
            f"Arrow held {arrow} bytes, over the bound {BOUND} plus {ARROW_SLACK} of slack")


def _losses(c, s, store):
    losses = s.losses("full") if hasattr(s, "losses") else []
    bulk = [x for x in losses if x.table not in METRIC_TABLES]
    c.check(bulk, "no bulk rows are counted as lost in the catalog, though the dumps held "
                  "past the bound cannot all have been kept")
    metric = [x for x in losses if x.table in METRIC_TABLES]
    c.check(not metric, f"metric rows were dropped: {metric}")
    c.note("lost: " + ", ".join(f"{x.table} {x.rows} rows {x.bytes >> 10} KiB ({x.reason})"
                                for x in losses))
    text = cli("show", "full", "--store", store)
    c.check(text.returncode == 0 and not has_traceback(text.stderr),
            f"`tfblackbox show`: {exit_text(text.returncode)}: {error_line(text.stderr)}")
    for x in bulk:
        c.check(f"lost {x.rows} {x.table} rows" in text.stdout,
                f"`tfblackbox show` does not say that {x.rows} {x.table} rows were lost")
    js = cli("show", "full", "--store", store, "--json")
    try:
        shown = json.loads(js.stdout).get("losses")
    except ValueError:
        shown = None
    c.check(shown and sorted((x["table"], x["rows"]) for x in shown) ==
            sorted((x.table, x.rows) for x in losses),
            f"`tfblackbox show --json` losses: {shown!r}")
