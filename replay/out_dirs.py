"""Output directories given on the command line (--out, --wandb-dir): made writable or
refused with a message that says which form of bad path it is."""

import os
import shutil

from tfblackbox.schema import BlackboxError


def prepare(path, option, empty=False):
    """Returns the absolute path of a directory the replay can write into, creating it if
    needed. Refuses a dangling symbolic link, a file, a directory it cannot write into and,
    with `empty`, a directory that holds anything."""
    full = os.path.abspath(path)
    if os.path.islink(full) and not os.path.exists(full):
        raise BlackboxError(f"{option} {full} is a symbolic link to {os.readlink(full)!r}, "
                            f"which does not exist; create its target or give another directory")
    if os.path.exists(full) and not os.path.isdir(full):
        raise BlackboxError(f"{option} {full} exists and is not a directory")
    if empty and os.path.isdir(full) and os.listdir(full):
        raise BlackboxError(f"{option} {full} is not empty; pass --force to write into it")
    try:
        os.makedirs(full, exist_ok=True)
        probe = os.path.join(full, f".tfblackbox-probe-{os.getpid()}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as e:
        raise BlackboxError(f"cannot write into {option} {full}: {e.strerror or e}") from e
    return full


def put_in_place(tmp, final):
    """Renames a finished dir into place; an older one is moved aside first, then removed
    (a reader sees the old dir or the new one, never a half-built one)."""
    if os.path.lexists(final):
        old = f"{final}.old-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
