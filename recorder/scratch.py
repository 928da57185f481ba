"""Scratch directories on tmpfs (/dev/shm when writable, else the temp dir), named after the
process that made them, so the next process of the machine removes those of processes that
died (SIGKILL) instead of leaving their memory taken: DumpHook's staging area (tf1) and the
tfdbg v2 writer's (tf2)."""

import glob
import os
import shutil
import tempfile
import uuid

from tfblackbox.schema.formats.files import pid_alive


def new_path(prefix):
    """A path for a new scratch dir `<prefix><pid>-<random>` (not made yet); the dirs of
    dead processes with this prefix are removed first."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else (
        tempfile.gettempdir())
    remove_stale(base, prefix)
    return os.path.join(base, f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def remove_stale(base, prefix):
    for path in glob.glob(os.path.join(base, prefix + "*")):
        try:
            pid = int(os.path.basename(path)[len(prefix):].split("-")[0])
        except ValueError:
            continue
        if not pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
