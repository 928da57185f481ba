"""kill -9 of `replay --to debug-dump` at random instants while it writes, into an empty --out
or over a complete earlier rebuild; then a re-run with --force must leave --out exactly as a
clean replay makes it (the same entries, byte for byte, no hidden or renamed-aside leftovers)
and every session.run dir must load with tfdbg's DebugDumpDir(validate=True).

And `replay --to tensorboard` killed at random instants, then run again: the logdir holds
every value of a clean replay exactly once, and no file TensorBoard would misread.
"""

import filecmp
import os
import shutil
import time

from .common import (Checks, Child, cli, cli_command, error_line, exit_text, guarded,
                     has_traceback)

GROUP = "kill-replay-debug-dump"
RUN = "dumped"


def recorded(ws):
    return ws.cached("dump-store", lambda: _record(ws))


def _record(ws):
    """A store with DumpHook dumps of every step, a clean rebuild of it, and when in that
    rebuild the first dir appeared and the process ended."""
    d, store = _train(ws, "dumps-recorded", "the dumps", "--run-id", RUN, "--steps", 80,
                      "--dump", 1)
    ref = os.path.join(d, "out-clean")
    c = Checks(GROUP, "clean-replay")
    first, total, p = _timed_replay(d, store, ref)
    ok = c.check(p == 0, f"the clean rebuild: {exit_text(p)}")
    dirs = sorted(os.listdir(ref)) if os.path.isdir(ref) else []
    if ok:
        bad = _load_all(ref, dirs)
        c.check(not bad, f"DebugDumpDir(validate=True) refuses the clean rebuild: {bad[:2]}")
        c.check(len(dirs) >= 70, f"only {len(dirs)} session.run dirs were rebuilt")
    # a rebuild over a complete one (--force) takes longer: each dir is renamed aside first
    again = os.path.join(d, "out-again")
    shutil.copytree(ref, again)
    _first, total_force, p = _timed_replay(d, store, again, force=True)
    c.check(p == 0, f"the clean rebuild with --force over a complete one: {exit_text(p)}")
    ws.discard(again)
    c.note(f"{len(dirs)} session.run dirs; the first after {first:.2f} s, done after "
           f"{total:.2f} s ({total_force:.2f} s over a complete one)")
    c.lost_secs = 0.0
    return store, ref, first, {False: total, True: total_force}, c.result()


def _train(ws, dirname, what, *args):
    """(dir, store) of a store a training worker recorded with these arguments."""
    d = ws.new(dirname)
    store = os.path.join(d, "store")
    child = Child.worker(d, "train", store, *args, name="train")
    code = child.wait()
    child.close()
    if code != 0:
        raise RuntimeError(f"recording {what} failed: {exit_text(code)}: "
                           f"{error_line(child.stderr())}")
    return d, store


def _timed_replay(d, store, out, force=False):
    """Runs the rebuild, noting when --out first held something and when it ended."""
    argv = cli_command() + replay_args(store, out) + (["--force"] if force else [])
    return _timed(argv, d, "replay-clean", lambda: os.path.isdir(out) and os.listdir(out))


def _timed(argv, d, name, wrote):
    """(seconds until wrote() first held, seconds until the end, exit code) of a replay."""
    child = Child(argv, d, name=name)
    t0, first = time.monotonic(), None
    while child.proc.poll() is None:
        if first is None and wrote():
            first = time.monotonic() - t0
        time.sleep(0.002)
    total = time.monotonic() - t0
    code = child.wait()
    child.close()
    return first if first is not None else total, total, code


def replay_args(store, out):
    return ["replay", "--store", store, "--to", "debug-dump", "--out", out]


def _load_all(root, names):
    """The dirs that DebugDumpDir(validate=True) cannot load, with why."""
    from tensorflow.python.debug.lib import debug_data
    bad = []
    for name in names:
        try:
            debug_data.DebugDumpDir(os.path.join(root, name), validate=True)
        except Exception as e:
            bad.append(f"{name}: {type(e).__name__}: {e}"[:200])
    return bad


def _differ(a, b, rel=""):
    """Paths (relative to a and b) of files that differ or exist on one side only."""
    cmp = filecmp.dircmp(a, b)
    out = [os.path.join(rel, n) for n in cmp.left_only + cmp.right_only]
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    out += [os.path.join(rel, n) for n in mismatch + errors]
    for sub in cmp.common_dirs:
        out += _differ(os.path.join(a, sub), os.path.join(b, sub), os.path.join(rel, sub))
    return out


def kill(ws, n, frac, over_existing=False):
    name = f"{'over-existing' if over_existing else 'empty-out'}#{n}"
    return guarded(GROUP, name, _kill, ws, name, frac, over_existing)


def _kill(ws, name, frac, over_existing):
    store, ref, first, total, _clean = recorded(ws)
    c = Checks(GROUP, name)
    d = ws.new(f"dumps-{name.replace('#', '-')}")
    try:
        _kill_and_rerun(c, store, ref, first, total, d, frac, over_existing)
    finally:
        ws.discard(d)
    c.lost_secs = 0.0
    return c.result()


def _kill_and_rerun(c, store, ref, first, total, d, frac, over_existing):
    out = os.path.join(d, "out")
    # aim at the writing: from when the clean rebuild's first dir appeared to its end; a
    # rebuild that ends before its kill tests nothing: then again, sooner
    delay = 0.8 * first + frac * (total[over_existing] - 0.8 * first)
    for _attempt in range(3):
        shutil.rmtree(out, ignore_errors=True)
        if over_existing:
            shutil.copytree(ref, out)
        argv = cli_command() + replay_args(store, out) + (["--force"] if over_existing else [])
        child = Child(argv, d, name="replay")
        time.sleep(delay)
        alive = child.kill()
        child.close()
        c.note(f"killed at {delay:.2f} s" + ("" if alive else " (it had ended)"))
        if alive:
            break
        delay /= 2
    p = cli(*replay_args(store, out), "--force")
    if not c.check(p.returncode == 0 and not has_traceback(p.stderr),
                   f"the re-run with --force: {exit_text(p.returncode)}: "
                   f"{error_line(p.stderr)}"):
        return
    want, have = sorted(os.listdir(ref)), sorted(os.listdir(out))
    extra = sorted(set(have) - set(want))
    c.check(not extra, f"--out holds {len(extra)} entr(y/ies) a clean rebuild does not make: "
                       f"{extra[:3]}")
    missing = sorted(set(want) - set(have))
    c.check(not missing, f"{len(missing)} session.run dir(s) missing: {missing[:3]}")
    common = sorted(set(want) & set(have))
    diff = [os.path.join(n, f) for n in common
            for f in _differ(os.path.join(ref, n), os.path.join(out, n))]
    c.check(not diff, f"{len(diff)} file(s) differ from a clean rebuild: {diff[:2]}")
    # the clean rebuild loads (clean-replay): dirs equal to it byte for byte load alike, so
    # DebugDumpDir opens those that differ and the first, middle and last
    sample = {f.split(os.sep)[0] for f in diff}
    if common:
        sample |= {common[0], common[len(common) // 2], common[-1]}
    bad = _load_all(out, sorted(sample))
    c.check(not bad, f"DebugDumpDir(validate=True) refuses {len(bad)} dir(s): {bad[:2]}")


def cases(ws, rng, quick):
    out = [("clean-replay", lambda: guarded(GROUP, "clean-replay", lambda: recorded(ws)[4]))]
    n_empty, n_over = (1, 1) if quick else (5, 5)
    for n in range(1, n_empty + 1):
        frac = rng.uniform(0.0, 0.85)
        out.append((f"empty-out#{n}", lambda n=n, frac=frac: kill(ws, n, frac)))
    for n in range(1, n_over + 1):
        frac = rng.uniform(0.0, 0.85)
        out.append((f"over-existing#{n}", lambda n=n, frac=frac: kill(ws, n, frac, True)))
    return out


# -- replay --to tensorboard --------------------------------------------------------------------

TB_GROUP = "kill-replay-tensorboard"
TB_RUN = "summaries"


def tb_recorded(ws):
    return ws.cached("tb-store", lambda: _tb_record(ws))


def _tb_record(ws):
    """A store of SummaryHook rows (scalars, a histogram, an image a step), a clean
    `replay --to tensorboard` of it, and when that replay wrote its first file and ended."""
    d, store = _train(ws, "tb-recorded", "the summaries", "--run-id", TB_RUN, "--steps", 3000,
                      "--image", "--step-sleep", 0, "--flush-every", 500)
    ref = os.path.join(d, "logdir-clean")
    c = Checks(TB_GROUP, "clean-replay")
    first, total, p = _timed_tb_replay(d, store, ref)
    c.check(p == 0, f"the clean replay: {exit_text(p)}")
    events, bad = tb_events(ref)
    c.check(not bad, f"the clean logdir has files TensorBoard would misread: {bad[:2]}")
    c.check(len(events) >= 3000 * 4, f"only {len(events)} (tag, step) values were written")
    c.note(f"{len(events)} values; the first file after {first:.2f} s, done after {total:.2f} s")
    c.lost_secs = 0.0
    return store, events, first, total, c.result()


def tb_replay_args(store, out):
    return ["replay", "--store", store, "--to", "tensorboard", "--out", out]


def _timed_tb_replay(d, store, out):
    return _timed(cli_command() + tb_replay_args(store, out), d, "tb-replay-clean",
                  lambda: os.path.isdir(out) and any(
                      "tfevents" in f for _d, _s, files in os.walk(out) for f in files))


def tb_events(logdir):
    """The (run dir, tag, step) of every summary value in the event files TensorBoard would
    read (names with "tfevents"), as a sorted list with repeats; and the files it would
    misread (a half-written last record, damage)."""
    from tfblackbox.schema.formats import tfevents, tfrecord
    out, bad = [], []
    for folder, _dirs, files in os.walk(logdir):
        for f in files:
            if "tfevents" not in f:
                continue
            path = os.path.join(folder, f)
            reader = tfrecord.RecordReader(path)
            try:
                records = list(reader)
            except Exception as e:   # damage in the middle of the file
                bad.append(f"{path}: {type(e).__name__}: {e}"[:200])
                continue
            if reader.partial:
                bad.append(f"{path}: a half-written last record ({reader.partial} bytes)")
            run = os.path.relpath(folder, logdir)
            for _off, data in records:
                ev = tfevents.parse_event(data)
                out.extend((run, v.tag, ev.step) for v in ev.values)
    return sorted(out), bad


def tb_kill(ws, n, frac):
    name = f"killed#{n}"
    return guarded(TB_GROUP, name, _tb_kill, ws, name, frac)


def _tb_kill(ws, name, frac):
    store, ref_events, first, total, _clean = tb_recorded(ws)
    c = Checks(TB_GROUP, name)
    d = ws.new(f"tb-{name.replace('#', '-')}")
    try:
        delay = 0.8 * first + frac * (total - 0.8 * first)
        for attempt in range(3):
            # a new logdir each try: one that ended before the kill left its cursor in the store,
            # so a re-run into the same (emptied) path would rightly write nothing
            out = os.path.join(d, f"logdir-{attempt}")
            child = Child(cli_command() + tb_replay_args(store, out), d, name="tb-replay")
            time.sleep(delay)
            alive = child.kill()
            child.close()
            c.note(f"killed at {delay:.2f} s" + ("" if alive else " (it had ended)"))
            if alive:
                break
            delay /= 2
        _after, bad = tb_events(out) if os.path.isdir(out) else ([], [])
        c.check(not bad, f"right after the kill, TensorBoard would misread: {bad[:2]}")
        p = cli(*tb_replay_args(store, out))
        if c.check(p.returncode == 0 and not has_traceback(p.stderr),
                   f"the re-run: {exit_text(p.returncode)}: {error_line(p.stderr)}"):
            events, bad = tb_events(out)
            c.check(not bad, f"after the re-run, TensorBoard would misread: {bad[:2]}")
            missing = len(ref_events) - len(set(events) & set(ref_events))
            c.check(events == ref_events,
                    f"{len(events)} values against {len(ref_events)} of a clean replay "
                    f"({len(events) - len(set(events))} repeated, {missing} missing)")
            again = cli(*tb_replay_args(store, out))
            c.check(again.returncode == 0 and tb_events(out)[0] == ref_events,
                    "a third replay changed the logdir (it must write nothing new)")
    finally:
        ws.discard(d)
    c.lost_secs = 0.0
    return c.result()


def tensorboard_cases(ws, rng, quick):
    out = [("clean-replay", lambda: guarded(TB_GROUP, "clean-replay",
                                            lambda: tb_recorded(ws)[4]))]
    for n in range(1, (2 if quick else 10) + 1):
        frac = rng.uniform(0.0, 0.9)
        out.append((f"killed#{n}", lambda n=n, frac=frac: tb_kill(ws, n, frac)))
    return out
