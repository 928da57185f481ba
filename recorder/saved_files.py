"""recorder.save: wandb.save's semantics, recorded as the run's files (the `file_blobs` table
and `run_events` rows of kind "file" that recorder/system/recording.py writes for
requirements.txt; `replay --to wandb` pushes them into the W&B run's files).

As wandb 0.31's Run.save: the glob is expanded when save is called (later files are not
picked up); a relative glob keeps its path below the working directory, an absolute one with
no base_path keeps one directory level, base_path keeps the structure below it. policy "now"
records the files now, "end" at finish, "live" now and again at finish when they changed
(wandb uploads a live file as it changes; the store keeps its first and last contents).
"""

from __future__ import annotations

import glob as globbing
import hashlib
import logging
import os
import pathlib
import threading
from typing import Any

log = logging.getLogger("tfblackbox")
POLICIES = ("live", "now", "end")


class SavedFiles:
    """The files save() named in one run, and their recording at finish."""

    def __init__(self, run: Any):
        self.run = run
        self.at_finish: dict[str, tuple[str, str | None]] = {}   # rel -> (src, last sha256)
        self._lock = threading.Lock()
        run.add_finish_callback(self.finish)

    def save(self, glob_str, base_path, policy):
        if policy not in POLICIES:
            raise ValueError(f'policy={policy!r}: only "live", "end" and "now" are supported')
        pairs = _expand(glob_str, base_path)
        now = [] if policy == "end" else self._read(pairs)
        with self._lock:
            for rel, src in pairs:
                if policy != "now":
                    sha = next((hashlib.sha256(d).hexdigest() for r, d in now if r == rel),
                               None)
                    self.at_finish[rel] = (src, sha)
        if now:
            self.run.system.record_files(now)
        return [rel for rel, _src in pairs]

    def finish(self, _timeout=None):
        with self._lock:
            pending = dict(self.at_finish)
        files = []
        for rel, (src, sha) in pending.items():
            for r, data in self._read([(rel, src)]):
                if hashlib.sha256(data).hexdigest() != sha:
                    files.append((r, data))
        if files:
            self.run.system.record_files(files)

    def _read(self, pairs):
        out = []
        for rel, src in pairs:
            try:
                with open(src, "rb") as f:
                    out.append((rel, f.read()))
            except OSError as e:
                log.warning("tfblackbox: save: %s could not be read (not recorded): %s", src, e)
        return out


def _expand(glob_str, base_path):
    """[(path in the run's files, source file)] as wandb's Run.save names them."""
    glob_str = os.fspath(glob_str)
    glob_path = pathlib.PurePath(glob_str)
    resolved = pathlib.PurePath(os.path.abspath(glob_path))
    if base_path is not None:
        base = pathlib.PurePath(os.path.abspath(base_path))
    elif not glob_path.is_absolute():
        base = pathlib.PurePath(os.path.abspath("."))
    else:
        base = resolved.parent.parent
    try:
        resolved.relative_to(base)
    except ValueError:
        raise ValueError(f"save({glob_str!r}): base_path {str(base)!r} is not a prefix of "
                         f"the glob") from None
    pairs = []
    for src in sorted(globbing.glob(str(resolved))):
        if os.path.isfile(src):
            rel = pathlib.PurePath(os.path.abspath(src)).relative_to(base).as_posix()
            pairs.append((rel, src))
    return pairs


def save(glob_str: str | os.PathLike, base_path: str | os.PathLike | None = None,
         policy: str = "live", run: Any = None) -> list[str]:
    """wandb.save for the active run; returns the recorded paths (in the run's files). Bad
    input (an unknown policy, a base_path that is no prefix) raises ValueError, as wandb;
    files that cannot be read are logged and left out."""
    from .run import get_or_start_run
    run = run if run is not None else get_or_start_run()
    saved = getattr(run, "_saved_files", None)
    if saved is None:
        saved = run._saved_files = SavedFiles(run)
    return saved.save(glob_str, base_path, policy)


__all__ = ["save", "SavedFiles", "POLICIES"]
