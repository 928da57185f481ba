"""The directory TF's tfdbg v2 writer writes into while the recorder reads it.

One per `enable_dump_debug_info` session: a fresh dir on tmpfs (/dev/shm) when there is one,
named after the process so that the dirs of a process that died (SIGKILL) are removed by the
next session on the machine. TF appends to its six files for the whole session; the bytes
the recorder has taken are given back to tmpfs by punching holes in the files (the file
keeps its size and TF its offsets; tmpfs frees the pages), so the staging area holds about
one poll's worth of records rather than the whole dump.

TFBLACKBOX_KEEP_STAGING=1 leaves the files whole and in place (debugging, and the tests that
compare them byte for byte with a rebuild).
"""

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil

from .. import scratch

log = logging.getLogger("tfblackbox")

PREFIX = "tfblackbox-tfdbg2-"
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = None


def keep_staging():
    return os.environ.get("TFBLACKBOX_KEEP_STAGING", "") not in ("", "0")


def make_dir():
    """A new, empty staging dir (stale ones of dead processes are removed first)."""
    path = scratch.new_path(PREFIX)
    os.makedirs(path)
    return path


def remove(path):
    if not keep_staging():
        shutil.rmtree(path, ignore_errors=True)


class HolePuncher:
    """Frees the bytes of files that were read (fallocate PUNCH_HOLE); says once, and stops,
    where the platform or filesystem cannot."""

    def __init__(self):
        self.enabled = not keep_staging()
        self.freed = {}          # path -> bytes freed so far

    def free(self, path, upto):
        if not self.enabled:
            return
        start = self.freed.get(path, 0)
        if upto <= start:
            return
        try:
            _punch(path, start, upto - start)
        except OSError as e:
            self.enabled = False
            log.warning("tfblackbox: cannot free the staging bytes already recorded (%s); the "
                        "staging dir %s keeps the whole dump until the session ends",
                        e, os.path.dirname(path))
            return
        self.freed[path] = upto


def _punch(path, offset, length):
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        if not name:
            raise OSError(errno.ENOSYS, "no C library to call fallocate through")
        _libc = ctypes.CDLL(name, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fd = os.open(path, os.O_WRONLY)
    try:
        if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length):
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
