"""One chunk of Events written as one new event file of a run's logdir, exactly once: the
file is written under a temporary name, the cursor records it as pending, the rename puts it
in place, and the cursor moves past it. A replay killed anywhere leaves either no file or a
file its cursor knows (`settle` finishes what a killed replay left pending)."""

import contextlib
import itertools
import os
import time

from tfblackbox.schema.formats import tfrecord
from tfblackbox.schema.formats.files import fsync_path
from tfblackbox.schema.kill_points import kill_point

from . import events as ev
from . import mirror


def write_chunk(store, run_id, dest, run_dir, step, state, stream):
    """Writes the stream's events into a new file of run_dir; returns the chunk, or None
    when there was nothing to write."""
    head, body = stream
    first = next(head, None) or next(body, None)
    if first is None:
        return None
    tmp = mirror.temp_path(run_dir)
    chunk = {"lo": None, "hi": step, "events": 0, "hparams": False}
    try:
        with open(tmp, "wb") as f:
            # TensorBoard's relative time axis starts at a file's first event
            f.write(tfrecord.frame(ev.event(first[1], 0) + _FILE_VERSION))
            head = itertools.chain([first] if first[0] is None else [], head)
            body = itertools.chain([first] if first[0] is not None else [], body)
            for _s, _w, data in head:
                f.write(tfrecord.frame(data))
                chunk["hparams"] = True
            for s, _w, data in body:
                f.write(tfrecord.frame(data))
                chunk["events"] += 1
                if chunk["events"] == 2:
                    kill_point("temp")
                chunk["lo"] = s if chunk["lo"] is None else chunk["lo"]
                chunk["hi"] = s if chunk["hi"] is None else max(chunk["hi"], s)
            f.flush()
            os.fsync(f.fileno())
        n = state.get("seq", 0) + 1
        chunk["file"] = f"events.out.tfevents.{int(time.time()):010d}.tfblackbox.{n:06d}"
        pending = dict(chunk)
        store.set_cursor(run_id, dest, step, dict(state, pending=pending))
        kill_point("pending")
        os.rename(tmp, os.path.join(run_dir, chunk["file"]))
        fsync_path(run_dir)
        kill_point("renamed")
        step, state = _commit(step, state, pending)
        store.set_cursor(run_id, dest, step, state)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return chunk


# An Event of file_version "brain.Event:2" starts every file, as TF's writers do.
_FILE_VERSION = b"\x1a\x0dbrain.Event:2"


def _commit(step, state, chunk):
    state = {k: v for k, v in state.items() if k != "pending"}
    state["seq"] = state.get("seq", 0) + 1
    state["hparams"] = state.get("hparams") or chunk["hparams"]
    return chunk["hi"], state


def settle(store, run_id, dest, run_dir, step, state):
    """A chunk a killed replay left pending: committed if its file was renamed into place,
    else forgotten (its temporary file is removed already)."""
    pending = state.get("pending")
    if pending is None:
        return step, state
    if os.path.isfile(os.path.join(run_dir, pending["file"])):
        step, state = _commit(step, state, pending)
    else:
        state = {k: v for k, v in state.items() if k != "pending"}
    store.set_cursor(run_id, dest, step, state)
    return step, state
