"""recorder.log_artifact (wandb.log_artifact's semantics) and the per-run artifact writer that
ModelCheckpoint and CheckpointHook record through.

On the calling (training) thread a version's files are only staged: hard-linked into the
store's blob folder when the caller says the file is never rewritten in place (a checkpoint
Keras or TF wrote; `link=True`) and the store's data is on its file system, else copied (as
wandb copies a logged file into its staging area). A link that cannot be made is a copy done
on the artifact thread instead; `wait_for(path)` blocks until such a copy of `path` is taken,
which ModelCheckpoint calls before Keras writes the file again. Hashing, chunking, writing the
blobs (schema/store/chunks.py: a large file as chunks stored once per store) and registering
happen on the run's artifact thread, one version at a time in the order they were logged:
blobs first, then one catalog transaction; then the staged link or copy is removed, so the
store never shares an inode with a file the training may rewrite. Nothing here raises into
training: a version that fails (a full disk) or passes init(max_artifact_bytes=...) is not
registered, logged (once per cause) and counted in the catalog's losses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any

from tfblackbox.schema.errors import BlackboxError
from tfblackbox.schema.kill_points import kill_point
from tfblackbox.schema.store import artifacts as art

log = logging.getLogger("tfblackbox")
LOSS_TABLE = "artifacts"
FINISH_WAIT = 600.0   # seconds finish() waits for versions still being stored
THREAD_NICE = 10      # the artifact thread's nice value (Linux: per thread)


@dataclasses.dataclass
class _Staged:
    path: str            # path inside the artifact
    src: str             # the file logged
    tmp: str | None      # our own copy or link of it (None: not made yet)
    size: int
    stamp: tuple | None = None   # (size, mtime_ns) of a linked file when staged


class PendingVersion:
    """What log_artifact returns: the version once the artifact thread registered it."""

    def __init__(self, name: str, type: str, aliases: tuple[str, ...]):
        self.name, self.type, self.aliases = name, type, aliases
        self.version: art.ArtifactVersion | None = None
        self.error: str | None = None
        self._done = threading.Event()

    def wait(self, timeout: float | None = None) -> art.ArtifactVersion | None:
        """The registered ArtifactVersion; None if it was skipped or failed (see .error)."""
        self._done.wait(timeout)
        return self.version

    def __repr__(self):
        state = self.version and f"v{self.version.version}" or self.error or "pending"
        return f"<tfblackbox artifact {self.name} ({self.type}) {state}>"


class ArtifactRecorder:
    """The artifact side of one run: staging on the caller's thread, storing on its own."""

    def __init__(self, run: Any, max_bytes: int | None = None):
        self.run, self.store, self.max_bytes = run, run.store, max_bytes
        self.stored_bytes = 0        # bytes this attempt added to the store
        self._queue: queue.Queue = queue.Queue()
        self._copies: dict[str, threading.Event] = {}   # src -> its deferred copy is taken
        self._losses: dict[tuple[str, str], list] = {}
        self._warned: set[str] = set()
        self._scratch: str | None = None
        self.before_finish: list = []   # fn(): may log more (CheckpointHook's last look)
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"tfblackbox-artifacts-{run.run_id}")
        self._thread.start()
        run.add_finish_callback(self.finish)

    # -- the caller's thread --------------------------------------------------------------

    def log(self, path: str, name: str, type: str, aliases=(), metadata=None,
            link: bool = False, extra: dict[str, bytes] | None = None) -> PendingVersion:
        """Stages the file or directory at `path` as a new version of `name` and queues it.
        `extra`: more files given as bytes ({path in the artifact: bytes})."""
        try:
            files = _files_of(path)
        except Exception as e:
            pending = PendingVersion(name, type, tuple(aliases))
            self._fail(pending, [], "staging", e)
            return pending
        return self.log_files(files, name, type, aliases, metadata, link, extra)

    def log_files(self, files, name: str, type: str, aliases=(), metadata=None,
                  link: bool = False, extra: dict[str, bytes] | None = None) -> PendingVersion:
        """log() of the files [(path inside the artifact, local file)]."""
        pending = PendingVersion(name, type, tuple(aliases))
        staged = []
        try:
            for inner, src in files:
                staged.append(self._stage(inner, src, link))
            for inner, data in (extra or {}).items():
                tmp = self._temp()
                with open(tmp, "xb") as f:
                    f.write(data)
                staged.append(_Staged(inner, "", tmp, len(data)))
        except Exception as e:
            _remove([s.tmp for s in staged])
            self._fail(pending, staged, "staging", e)
            return pending
        self._queue.put((pending, staged, dict(metadata or {}), self.run.step, time.time()))
        return pending

    def wait_for(self, src: str, timeout: float | None = None) -> None:
        """Blocks until no deferred copy of file `src` is still to be taken (so it may be
        rewritten); a linked or copied file needs no wait."""
        event = self._copies.get(os.path.abspath(src))
        if event is not None:
            event.wait(timeout)

    def _stage(self, inner, src, link):
        size = os.path.getsize(src)
        if link and self.store.data.local:
            tmp = self._temp()
            try:
                os.link(src, tmp)
                st = os.stat(tmp)
                return _Staged(inner, src, tmp, st.st_size, (st.st_size, st.st_mtime_ns))
            except OSError:
                # another file system: the artifact thread copies it before Keras/TF may
                # write it again (wait_for)
                self._copies[os.path.abspath(src)] = threading.Event()
                return _Staged(inner, src, None, size)
        tmp = self._temp()
        try:
            shutil.copyfile(src, tmp)
        except BaseException:
            _remove([tmp])
            raise
        return _Staged(inner, src, tmp, size)

    def _temp(self):
        """A new temporary name: in the blob folder (local data), else in a scratch dir."""
        if self.store.data.local:
            return art.temp_blob_path(self.store.data)
        if self._scratch is None:
            self._scratch = tempfile.mkdtemp(prefix=f"tfblackbox-artifacts-{os.getpid()}-")
        return os.path.join(self._scratch, uuid.uuid4().hex)

    # -- the artifact thread ---------------------------------------------------------------

    def _main(self):
        # Hashing and writing checkpoints must not take CPU from training on a busy machine:
        # on Linux a thread has its own nice value (best effort; finish() still waits).
        with contextlib.suppress(Exception):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), THREAD_NICE)
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if isinstance(item[0], _Marker):
                    item[0]._done.set()
                    continue
                self._store_version(*item)
            finally:
                self._queue.task_done()

    def _store_version(self, pending, staged, metadata, step, wall):
        try:
            for s in staged:
                if s.tmp is None:   # a deferred copy
                    tmp = self._temp()
                    try:
                        shutil.copyfile(s.src, tmp)
                        s.tmp = tmp
                    except BaseException:
                        _remove([tmp])   # a full disk: no partial copy left
                        raise
                    finally:
                        event = self._copies.pop(os.path.abspath(s.src), None)
                        if event is not None:
                            event.set()
            files, chunks, added = [], {}, 0
            for s in staged:
                room = None if self.max_bytes is None else \
                    self.max_bytes - self.stored_bytes - added
                got = art.store_file(self.store, s.tmp, room)
                if got is None:   # past the budget: written chunks stay orphans for verify
                    _remove([x.tmp for x in staged])
                    self._skip(pending, staged, step)
                    return
                _check_unchanged(s)
                added += got.new_bytes
                if got.chunks:
                    chunks[got.sha256] = got.chunks
                files.append(art.ArtifactFile(s.path, got.sha256, got.size))
                _remove([s.tmp])
            kill_point("artifact-blobs-written")
            pending.version = art.register(
                self.store, self.run.run_id, pending.name, pending.type, files,
                pending.aliases, metadata, step, wall, self.run.writer_id, chunks=chunks)
            self.stored_bytes += added
        except Exception as e:
            _remove([s.tmp for s in staged])
            self._fail(pending, staged, "storing", e)
        finally:
            for s in staged:
                event = self._copies.pop(os.path.abspath(s.src), None) if s.src else None
                if event is not None:
                    event.set()
            pending._done.set()

    def _skip(self, pending, staged, step):
        pending.error = "skipped: past max_artifact_bytes"
        if "max_bytes" not in self._warned:
            self._warned.add("max_bytes")
            log.warning("tfblackbox: run %s: artifact %s and later versions past "
                        "max_artifact_bytes=%d are not recorded (counted in the catalog; "
                        "training goes on)", self.run.run_id, pending.name, self.max_bytes)
        self._count("max_bytes", staged, step)

    def _fail(self, pending, staged, what, err):
        pending.error = f"{what} failed: {type(err).__name__}: {err}"
        pending._done.set()
        key = f"{what}:{type(err).__name__}"
        if key not in self._warned:
            self._warned.add(key)
            log.warning("tfblackbox: run %s: artifact %s was not recorded (%s; training goes "
                        "on): %s: %s", self.run.run_id, pending.name, what, type(err).__name__,
                        err)
        self._count("failed", staged, self.run.step)

    def _count(self, reason, staged, step):
        entry = self._losses.setdefault((LOSS_TABLE, reason), [0, 0, step, step])
        entry[0] += 1
        entry[1] += sum(s.size for s in staged)
        entry[3] = step
        with contextlib.suppress(Exception):   # a full disk may refuse this: noted at the end
            self.store.note_losses(self.run.run_id, self.run.writer_id, self.losses())

    def losses(self) -> dict:
        """{("artifacts", reason): (versions, bytes, first step, last step)} of this attempt."""
        return {k: tuple(v) for k, v in self._losses.items()}

    def flush(self, timeout: float | None = None) -> None:
        """Blocks until every version logged so far is stored or given up."""
        done = threading.Event()
        self._queue.put((_Marker(done), [], {}, None, 0.0))
        done.wait(timeout)

    def finish(self, timeout: float | None = None) -> None:
        for fn in self.before_finish:
            try:
                fn()
            except Exception as e:
                log.warning("tfblackbox: run %s: %s: %s", self.run.run_id, type(e).__name__, e)
        self._queue.put(None)
        self._thread.join(FINISH_WAIT if timeout is None else timeout)
        if self._thread.is_alive():
            log.warning("tfblackbox: run %s: artifacts still being stored at finish were not "
                        "waited for", self.run.run_id)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


class _Marker(PendingVersion):
    """A flush marker: 'stored' at once, registering nothing."""

    def __init__(self, done):
        super().__init__("", "", ())
        self._done = done


def _files_of(path):
    """[(path inside the artifact, file)] of a file (its base name) or a directory (every
    file below it, relative, sorted), as wandb's add_file / add_dir name them."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [(os.path.basename(path), path)]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"artifact path {path} is neither a file nor a directory")
    found = []
    for folder, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(folder, name)
            found.append((os.path.relpath(full, path).replace(os.sep, "/"), full))
    return found


def _check_unchanged(s):
    """A linked file shares its inode with the file the training wrote: ModelCheckpoint
    unlinks it before Keras saves there again, but anything writing it in place before the
    artifact thread read it changes the bytes; such a version is refused, never half-made."""
    if s.stamp is not None:
        st = os.stat(s.tmp)
        if (st.st_size, st.st_mtime_ns) != s.stamp:
            raise BlackboxError(f"artifact file {s.src} was rewritten in place while it "
                                    f"was being stored; not recorded")


def _remove(paths):
    for p in paths:
        if p:
            with contextlib.suppress(OSError):
                os.remove(p)


def recorder_of(run: Any) -> ArtifactRecorder:
    """The run's ArtifactRecorder (made on first use)."""
    rec = getattr(run, "_artifact_recorder", None)
    if rec is None:
        rec = run._artifact_recorder = ArtifactRecorder(
            run, getattr(run, "max_artifact_bytes", None))
    return rec


def log_artifact(path: str | os.PathLike, name: str | None = None, type: str | None = None,
                 aliases: list[str] | None = None, metadata: dict | None = None,
                 run: Any = None) -> PendingVersion | None:
    """wandb.log_artifact(path, name, type, aliases) for the active run: a file or a
    directory (a SavedModel) as a new version of `name` (default `run-<run id>-<base name>`,
    type default "unspecified", aliases default ["latest"], as wandb gives them). The files
    are copied now (as wandb stages them); stored and registered in the background. Never
    raises into training: returns None (logged) for bad input."""
    from .run import get_or_start_run
    try:
        run = run if run is not None else get_or_start_run()
        path = os.fspath(path)
        name = name or f"run-{run.run_id}-{os.path.basename(os.path.normpath(path))}"
        aliases = ["latest"] if aliases is None else (
            [aliases] if isinstance(aliases, str) else list(aliases))
        bad = [a for a in [name, *aliases] if any(c in a for c in "/:")]
        if bad:
            raise ValueError(f"artifact name or alias {bad[0]!r} contains '/' or ':'")
        return recorder_of(run).log(path, name, type or "unspecified", aliases, metadata)
    except Exception as e:
        log.warning("tfblackbox: log_artifact(%r) was not recorded (training goes on): %s: %s",
                    path, e.__class__.__name__, e)
        return None


__all__ = ["ArtifactRecorder", "PendingVersion", "log_artifact", "recorder_of"]
