"""The disk under the store goes bad while training runs: it fills up (a small tmpfs mounted by
the case), or the store's files become unwritable or lose SQLite's -shm / -wal (training runs
as `nobody`, since root ignores permission bits). Training must go on and exit 0; the store
must open and verify afterwards; what could be written must be there.
"""

import contextlib
import errno
import os
import subprocess
import sys

from .common import (Checks, Child, child_env, cli, error_line, exit_text, guarded,
                     has_traceback, lost_training_secs, make_dir, not_run, open_store, spans,
                     steps_in, verify_cli)

FULL_GROUP, RO_GROUP = "disk-full", "read-only"


@contextlib.contextmanager
def tmpfs(path, size):
    """Mounts a tmpfs of `size` at path; yields None, or why it could not be mounted."""
    make_dir(path)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                       capture_output=True, text=True)
    if p.returncode != 0:
        yield f"mount -t tmpfs is not permitted here: {p.stderr.strip() or p.returncode}"
        return
    try:
        yield None
    finally:
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)


def fill(path):
    """Writes `path` until the filesystem is full; returns its size."""
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for chunk in (1 << 20, 4096, 512, 1):
            block = b"\0" * chunk
            while True:
                try:
                    n += os.write(fd, block)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return n


# -- disk full ---------------------------------------------------------------------------------

PHASE1, PHASE2, STEPS = 40, 90, 150   # steps before the disk fills, until it is freed, in all
# variant: (DumpHook every N steps or 0, image summaries, bytes left free when "full", whether
# space comes back before the training ends)
FULL_VARIANTS = {"full": (0, False, 0, True), "nearly-full": (0, True, 64 << 10, True),
                 "full-with-dumps": (5, False, 0, True), "full-at-finish": (0, False, 0, False)}


def disk_full(ws, variant="full"):
    return guarded(FULL_GROUP, variant, _disk_full, ws, variant)


def _disk_full(ws, variant):
    c = Checks(FULL_GROUP, variant)
    d = ws.new(f"disk-full-{variant}")
    mnt = os.path.join(d, "mnt")
    with tmpfs(mnt, "16m") as why:
        if why:
            return not_run(FULL_GROUP, variant, why)
        store = os.path.join(mnt, "store")
        dump, image, slack, freed = FULL_VARIANTS[variant]
        args = ["train", store, "--run-id", "full", "--steps", STEPS if freed else PHASE2,
                "--flush-every", 10, "--flush-secs", 0.5,
                "--pause-at", f"{PHASE1},{PHASE2}" if freed else PHASE1]
        args += ["--dump", dump] + (["--image"] if image else [])
        child = Child.worker(d, *args)
        try:
            if not _paused(c, child, PHASE1):
                return c.result()
            filled = fill(os.path.join(mnt, "filler"))
            if slack:
                filled -= slack
                os.truncate(os.path.join(mnt, "filler"), filled)
            child.send("go")
            if freed:
                if not _paused(c, child, PHASE2):
                    return c.result()
                os.remove(os.path.join(mnt, "filler"))
                child.send("go")
            code = child.wait()
        finally:
            child.close()
        c.note(f"filled {filled >> 10} KiB; {len(child.all('flush-error'))} flush(es) failed "
               f"while full")
        c.check(code == 0, f"training: {exit_text(code)}: {error_line(child.stderr())}")
        c.check(child.last("finish-done") and not child.last("finish-error"),
                "finish() raised (it must log, count what was lost and return)")
        tmp = [os.path.join(f, n) for f, _d, names in os.walk(store) for n in names
               if n.startswith(".") and n.endswith(".tmp")]
        c.check(not tmp, f"the training left {len(tmp)} temporary file(s) "
                         f"({sum(os.path.getsize(t) for t in tmp)} bytes): "
                         f"{[os.path.basename(t) for t in tmp][:2]}")
        if not freed:
            os.remove(os.path.join(mnt, "filler"))
        s, err = open_store(store)
        if c.check(s is not None, f"after the disk was freed: {err}"):
            try:
                _full_rows(c, child, s, freed)
            finally:
                s.close()
        verify_cli(c, store, "after the disk was freed")
    return c.result()


def _paused(c, child, step):
    e = child.wait_for("pause", lambda e: int(e.args[0]) == step - 1, timeout=180)
    return c.check(e is not None, f"training never reached step {step}: "
                   f"{exit_text(child.proc.poll())}: {error_line(child.stderr())}")


def _full_rows(c, child, s, freed):
    stored = steps_in(s, "full", tag="fed")
    have = set(stored)
    before = [i for i in range(PHASE1) if i not in have]
    during = [i for i in range(PHASE1, PHASE2) if i not in have]
    after = [i for i in range(PHASE2, STEPS if freed else PHASE2) if i not in have]
    c.check(not before, f"rows stored before the disk filled are gone: {spans(before)}")
    c.check(not after, f"rows logged after space returned are not stored: {spans(after)}")
    writer = s.writers("full")[-1]
    lost = s.losses("full")
    c.check(not during or lost,
            f"rows logged while the disk was full are lost ({spans(during)}), and the catalog "
            f"does not count them")
    if during:
        c.note(f"rows logged while full and not stored: {spans(during)}")
    if lost:
        c.note("counted as lost: " + ", ".join(f"{x.rows} {x.table} ({x.reason})" for x in lost))
    status = s.run("full").status
    c.check(status in ("finished", "failed"), f"the run is left {status!r} (attempt error: "
                                              f"{writer.error})")
    c.lost_secs, _missing = lost_training_secs(child, stored)


# -- read-only mid-run -------------------------------------------------------------------------

RO_PAUSE, RO_STEPS = 40, 100
RO_VARIANTS = ("chmod", "shm-truncate", "wal-shm-delete", "chmod+shm-truncate")


def read_only(ws, variant):
    return guarded(RO_GROUP, variant, _read_only, ws, variant)


def _read_only(ws, variant):
    c = Checks(RO_GROUP, variant)
    d = ws.new(f"read-only-{variant}")
    store = os.path.join(d, "store")
    child = Child.worker(d, "train", store, "--run-id", "ro", "--steps", RO_STEPS,
                         "--flush-every", 20, "--flush-secs", 0.5, "--pause-at", RO_PAUSE,
                         unprivileged=True)
    modes = {}
    try:
        if not _paused(c, child, RO_PAUSE):
            return c.result()
        done = _spoil(store, variant, modes)
        c.note("; ".join(done))
        child.send("go")
        code = child.wait()
    finally:
        child.close()
        for path, mode in modes.items():   # as it was, for the checks and the clean-up
            os.chmod(path, mode)
    c.check(code == 0, f"training: {exit_text(code)}: {error_line(child.stderr())}")
    s, err = open_store(store)
    if c.check(s is not None, f"afterwards: {err}"):
        try:
            stored = steps_in(s, "ro", tag="fed")
            gone = [i for i in range(RO_PAUSE) if i not in set(stored)]
            if variant == "wal-shm-delete":   # the deleted WAL held committed registrations
                c.note(f"flushed rows gone with the WAL: {spans(gone)}" if gone else
                       "no flushed row was lost")
            else:
                c.check(not gone, f"rows flushed before the change are gone: {spans(gone)}")
            c.lost_secs, _m = lost_training_secs(child, stored)
        finally:
            s.close()
    verify_cli(c, store, "afterwards")
    return c.result()


def _spoil(store, variant, modes):
    done = []
    shm, wal = (os.path.join(store, "catalog.sqlite" + x) for x in ("-shm", "-wal"))
    if "chmod" in variant:
        for folder, _dirs, files in os.walk(store):
            for path in [folder] + [os.path.join(folder, n) for n in files]:
                modes[path] = os.stat(path).st_mode & 0o7777
                os.chmod(path, 0o555 if path == folder else 0o444)
        done.append(f"made {len(modes)} files and dirs read-only")
    if "shm-truncate" in variant:
        if os.path.exists(shm):
            os.truncate(shm, 0)
            done.append("truncated catalog.sqlite-shm")
        else:
            done.append("no catalog.sqlite-shm to truncate")
    if variant == "wal-shm-delete":
        for path in (wal, shm):
            if os.path.exists(path):
                os.remove(path)
                done.append(f"deleted {os.path.basename(path)}")
    return done


def read_only_media(ws):
    """A finished store on read-only media (a carried USB disk): runs, show and a dry-run
    replay read it."""
    return guarded(RO_GROUP, "ro-media-readers", _read_only_media, ws)


def _read_only_media(ws):
    c = Checks(RO_GROUP, "ro-media-readers")
    d = ws.new("ro-media")
    mnt = os.path.join(d, "mnt")
    with tmpfs(mnt, "16m") as why:
        if why:
            return not_run(RO_GROUP, "ro-media-readers", why)
        store = os.path.join(mnt, "store")
        p = subprocess.run(
            [sys.executable, "-c", "import sys; from tfblackbox import recorder\n"
             "r = recorder.init(store=sys.argv[1], run_id='carried')\n"
             "r.submit(lambda b: [b.add_scalar(i, float(i), 'x', 1.0) for i in range(10)])\n"
             "recorder.finish()", store], capture_output=True, text=True, env=child_env())
        if not c.check(p.returncode == 0, f"recording: {error_line(p.stderr)}"):
            return c.result()
        subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
        for args in (["runs"], ["show", "carried"],
                     ["replay", "--to", "wandb", "--mode", "offline", "--dry-run",
                      "--wandb-dir", os.path.join(d, "wandb")]):
            q = cli(*args, "--store", store)
            c.check(q.returncode == 0 and not has_traceback(q.stderr),
                    f"`tfblackbox {args[0]}` on read-only media: {exit_text(q.returncode)}: "
                    f"{error_line(q.stderr)}")
    c.lost_secs = 0.0
    return c.result()


def full_cases(ws, rng, quick):
    from .disk_full_dumps import CASE, dumps_space_returns   # issue 23's case
    variants = ("full",) if quick else tuple(FULL_VARIANTS)
    return [(v, lambda v=v: disk_full(ws, v)) for v in variants] + [
        (CASE, lambda: dumps_space_returns(ws))]


def ro_cases(ws, rng, quick):
    variants = ("chmod", "shm-truncate") if quick else RO_VARIANTS
    return [(v, lambda v=v: read_only(ws, v)) for v in variants] + [
        ("ro-media-readers", lambda: read_only_media(ws))]
