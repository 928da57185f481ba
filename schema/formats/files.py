"""Durable file writes shared by the store, the replays and the recorder's staging, and the
test of whether a leftover file's owner process still runs."""

import contextlib
import os


def fsync_path(path):
    """fsyncs a file or a directory (a rename is durable once its directory is); best effort
    where the platform or filesystem cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def durable_file(final):
    """Yields a binary file opened under a temporary name next to `final` (leading '.', so
    readers skip it). On a clean exit it is fsynced, renamed into place and its directory
    fsynced. A failed write (a full disk) removes the temporary file: each retry would
    otherwise leave another and eat the space freed later."""
    folder, name = os.path.split(final)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, "." + name + ".tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_path(folder)


def write_durably(final, data):
    """Writes bytes to `final` through durable_file."""
    with durable_file(final) as f:
        f.write(data)


def pid_alive(pid):
    """True if process `pid` exists on this host (files named after a dead pid are
    leftovers of a killed process; a live one's may be in flight)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
