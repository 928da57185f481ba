"""CheckpointHook: the checkpoints a MonitoredTrainingSession writes (its checkpoint_dir, by
the CheckpointSaverHook or any tf.train.Saver there) recorded as versions of
`run_<run id>_model`, type "model", aliases ["latest", "step_<N>"].

    hooks=[recorder.CheckpointHook(checkpoint_dir)]   # in MonitoredTrainingSession's hooks

A checkpoint becomes a version only once TF's checkpoint state file (`checkpoint`) lists it:
TF updates that file after the checkpoint's files are written whole (each by a temporary name
and a rename), so a half-written checkpoint is never taken; and only when its index and every
data shard (`-of-N`) are there. Checkpoints listed before the session began (a resumed run's)
are not recorded again. The state file is looked at after a step at most every `poll_secs`
(one stat), at the session's end (MonitoredTrainingSession runs the user's hooks after its
CheckpointSaverHook, so the last save is seen) and at the run's finish. TF never rewrites a
checkpoint's files in place, so they are hard-linked into the store where it is on their
file system (no copy on the training thread); a version's files are the checkpoint's files
plus a `checkpoint` state file naming it, so `tf.train.latest_checkpoint` finds it in a
directory `tfblackbox artifacts get` wrote.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from typing import Any

import tensorflow as tf

from .. import run as run_mod
from ..artifacts import recorder_of

log = logging.getLogger("tfblackbox")
_STEP = re.compile(r"-(\d+)$")
_SHARD = re.compile(r"\.data-(\d+)-of-(\d+)$")


class CheckpointHook(tf.compat.v1.train.SessionRunHook):
    def __init__(self, checkpoint_dir: str, poll_secs: float = 1.0, run: Any = None) -> None:
        self.checkpoint_dir = os.fspath(checkpoint_dir)
        self.poll_secs = float(poll_secs)
        self._given_run = run
        self._run: Any = None
        self._seen: set[str] = set()
        self._state_stat: tuple | None = None
        self._next_poll = 0.0
        self.versions: list = []   # PendingVersion of each recorded checkpoint

    def begin(self) -> None:
        try:
            self._run = self._given_run or run_mod.get_or_start_run()
            self._seen = set(self._listed())       # earlier checkpoints are not this run's
            recorder_of(self._run).before_finish.append(lambda: self.poll(force=True))
        except Exception as e:
            log.warning("tfblackbox: CheckpointHook: not recording checkpoints: %s: %s",
                        type(e).__name__, e)
            self._run = None

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.poll_secs
            self.poll()

    def end(self, session: Any) -> None:
        self.poll(force=True)

    def poll(self, force: bool = False) -> None:
        """Records each checkpoint the state file newly lists (never raises)."""
        if self._run is None or self._run.finished and not force:
            return
        try:
            st = os.stat(os.path.join(self.checkpoint_dir, "checkpoint"))
        except OSError:
            return
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self._state_stat and not force:
            return
        self._state_stat = key
        try:
            for prefix in self._listed():
                if prefix not in self._seen and self._record(prefix):
                    self._seen.add(prefix)
        except Exception as e:
            log.warning("tfblackbox: CheckpointHook: %s: %s (training goes on)",
                        type(e).__name__, e)

    def _listed(self):
        """The checkpoint prefixes TF's state file lists, oldest first, as absolute paths."""
        state = tf.train.get_checkpoint_state(self.checkpoint_dir)
        if state is None:
            return []
        paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
        if state.model_checkpoint_path and state.model_checkpoint_path not in paths:
            paths.append(state.model_checkpoint_path)
        return [os.path.abspath(p) for p in paths if p]   # TF joined them with the dir

    def _record(self, prefix):
        files = _complete_files(prefix)
        if files is None:
            return False   # not whole (yet): looked at again on the next change
        m = _STEP.search(prefix)
        aliases = ["latest"] + ([f"step_{int(m.group(1))}"] if m else [])
        base = os.path.basename(prefix)
        state = (f'model_checkpoint_path: "{base}"\n'
                 f'all_model_checkpoint_paths: "{base}"\n').encode()
        pending = recorder_of(self._run).log_files(
            [(os.path.basename(f), f) for f in files], f"run_{self._run.run_id}_model",
            "model", aliases, link=True, extra={"checkpoint": state})
        self.versions.append(pending)
        return True


def _complete_files(prefix):
    """The files of checkpoint `prefix` when it is whole (its index and every data shard),
    else None."""
    index = prefix + ".index"
    if not os.path.isfile(index):
        return None
    shards = [f for f in glob.glob(glob.escape(prefix) + ".data-*") if _SHARD.search(f)]
    if not shards:
        return None
    want = int(_SHARD.search(shards[0]).group(2))
    if len({_SHARD.search(f).group(1) for f in shards}) != want:
        return None
    meta = [prefix + ".meta"] if os.path.isfile(prefix + ".meta") else []
    return sorted([index, *shards, *meta])


__all__ = ["CheckpointHook"]
