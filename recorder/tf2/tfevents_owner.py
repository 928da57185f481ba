"""Whose is an event file: what sync_tensorboard asks of a file it finds under a learned
logdir that was already there when it first looked (a reused log_dir holds earlier runs').

TF's and TensorBoard's writers name their files
`events.out.tfevents.<seconds>.<host>[.<pid>.<n>][suffix]` (TF1's FileWriter leaves out the
pid). A file is the run's when its name says this process wrote it (host and pid, and a time
not before the process started: a pid can come back in a new container with the same host
name), or that it was created at or after `since`, to the second (as W&B's tensorboard
watcher decides). A file whose name carries no time is the run's when it was modified since,
to the second too.
"""

import functools
import os
import socket


def is_the_runs(path, since):
    """Whether the event file at `path` was written by this process or created since
    `since` (seconds since the epoch)."""
    parts = os.path.basename(path).split(".")
    try:
        at = parts.index("tfevents")
        created = int(parts[at + 1])
    except (ValueError, IndexError):
        try:   # to the second, as names are: the kernel stamps files from a coarse clock
            return os.path.getmtime(path) >= int(since)   # that can lag time.time() by ms
        except OSError:
            return False
    if created >= int(since):
        return True
    host = socket.gethostname().split(".")
    writer = parts[at + 2:at + 3 + len(host)]
    started = process_started()
    return (writer == host + [str(os.getpid())] and started is not None
            and created >= int(started))


@functools.lru_cache(maxsize=1)
def process_started():
    """When this process started (seconds since the epoch), from /proc; None without it."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])   # field 22: starttime
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
