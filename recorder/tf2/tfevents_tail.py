"""A background thread per run that tails the tfevents files under the watched logdirs.

Every poll (POLL_SECS) it walks each watched logdir, picks up new event files (rotations, new
writers) and reads the records each file gained since the last poll; a half-written last
record waits for the next poll. The records go to the run's writer in chunks of up to
JOB_BYTES, decoded there (tfevents_decode.py); at most a quarter of the writer's queue is
ours at once, so the tail never crowds out the hooks' items, and records the queue cannot
take yet wait in memory for the next poll (the file still has them too).

Bad input never stops training: a logdir that disappears, a file removed or truncated, a
corrupt record, a file that grows after a newer one appeared in its directory (TensorBoard
no longer reads it) -- each is logged once as a warning naming the file, and everything
readable is recorded. `drain()` (run at finish, after TF's writers were flushed) reads to
the end of every file and keeps the bytes after a damaged record, or a half-written tail,
as an "unframed" row so the export still gives back the file as it was.
"""

import functools
import logging
import os
import threading
import time
import weakref

from tfblackbox.schema.formats import tfrecord
from tfblackbox.schema.codecs.tfevents_restore import read_points

from tfblackbox.schema.codecs.tfevents_decode import FileSource, add_unframed, decode_records

log = logging.getLogger("tfblackbox")

POLL_SECS = 1.0
JOB_BYTES = 1 << 20      # record bytes per writer job
STALL_SECS = 30.0        # drain gives up when the writer takes nothing for this long
KERAS_DIRS = ("train", "validation")   # keras.callbacks.TensorBoard's writers' subdirs


class _Root:
    def __init__(self, path, prefix):
        self.path, self.prefix = path, prefix
        self.seen = self.gone = False


class _File:
    def __init__(self, path, src, resume=(0, 0)):
        self.reader = tfrecord.RecordReader(path, *resume)
        self.src = src
        self.dir, self.name = os.path.split(path)
        self.pending = []              # (offset, index, data) read, not yet taken by the writer
        self.corrupt_at = None
        self.stopped = self.missing = self.had_records = False


class TfeventsTail:
    def __init__(self, run, poll_secs=POLL_SECS):
        self.run = run
        self.poll_secs = poll_secs
        self.roots = []
        self.files = {}
        self.records = 0               # records handed to the writer
        self._roots_lock = threading.Lock()
        self._lock = threading.RLock()  # one poll at a time
        self._cond = threading.Condition()
        self._inflight = 0
        queue = getattr(getattr(run, "writer", None), "max_queue_bytes", 32 << 20)
        self._budget = max(JOB_BYTES, queue // 4)
        self._resume = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = None

    # -- what to watch ------------------------------------------------------------------------

    def watch(self, logdir, learned=False):
        """Watches `logdir` (and its subdirectories). A logdir learned from a writer and named
        like a Keras TensorBoard writer's (train/, validation/) is watched from its parent, so
        their tags become "train/..." and "validation/..."."""
        path = os.path.abspath(os.fspath(logdir))
        if learned and os.path.basename(path) in KERAS_DIRS:
            path = os.path.dirname(path)
        with self._roots_lock:
            if any(path == r.path or path.startswith(r.path.rstrip(os.sep) + os.sep)
                   for r in self.roots):
                return False
            prefix = ""
            if self.roots:   # tags of a second logdir must not collide with the first's
                common = os.path.commonpath([self.roots[0].path, path])
                rel = os.path.relpath(path, common)
                prefix = "" if rel == "." else rel.replace(os.sep, "/")
            self.roots.append(_Root(path, prefix))
        log.info("tfblackbox: run %s: watching tfevents under %s%s", self.run.run_id, path,
                 f" (tags under {prefix}/)" if prefix else "")
        self.start()
        self._wake.set()
        return True

    def start(self):
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name=f"tfblackbox-tfevents-{self.run.run_id}")
            self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:   # never take training down; try again next poll
                log.error("tfblackbox: tailing tfevents failed (retrying): %s: %s",
                          type(e).__name__, e)
            self._wake.wait(self.poll_secs)
            self._wake.clear()

    # -- one poll -------------------------------------------------------------------------------

    def poll(self):
        """Finds new files, reads what every file gained; returns the records read."""
        with self._lock:
            self._scan()
            return sum(self._read(self.files[p]) for p in sorted(self.files))

    def _scan(self):
        with self._roots_lock:
            roots = list(self.roots)
        for root in roots:
            if not os.path.isdir(root.path):
                if root.seen and not root.gone:
                    log.warning("tfblackbox: logdir %s disappeared; what was read from it is "
                                "recorded, and it is watched in case it comes back", root.path)
                root.gone = True
                continue
            if root.gone:
                log.warning("tfblackbox: logdir %s is back; tailing it again", root.path)
            root.seen, root.gone = True, False
            for dirpath, _dirs, names in os.walk(root.path):
                for name in names:
                    path = os.path.join(dirpath, name)
                    if "tfevents" in name and path not in self.files:
                        self._add(path, root, dirpath, name)

    def _add(self, path, root, dirpath, name):
        rel = os.path.relpath(dirpath, root.path)
        parts = [p for p in (root.prefix, "" if rel == "." else rel.replace(os.sep, "/")) if p]
        namespace = "/".join(parts)
        src = FileSource(path, f"{namespace}/{name}" if namespace else name, namespace)
        self.files[path] = _File(path, src, self._resume_point(path))

    def _resume_point(self, path):
        """(offset, index) an earlier attempt of this run read the file up to, else (0, 0)."""
        if self._resume is None:
            self._resume = {}
            if getattr(self.run, "attempt", 1) > 1:
                try:
                    self._resume = read_points(self.run.store, self.run.run_id)
                except Exception as e:
                    log.warning("tfblackbox: could not read which tfevents records earlier "
                                "attempts recorded (%s); files are read from the start", e)
        return self._resume.get(path, (0, 0))

    def _read(self, f):
        if f.stopped or not self._submit(f):
            return 0
        n = 0
        while True:
            if self._inflight >= self._budget:
                return n   # the writer is behind: leave the bytes in the file for now
            try:
                batch = f.reader.read()
            except FileNotFoundError:
                if not f.missing:
                    f.missing = True
                    log.warning("tfblackbox: %s was removed after %d of its bytes were read; "
                                "those records are kept", f.reader.path, f.reader.offset)
                return n
            except tfrecord.CorruptRecordError as e:
                f.corrupt_at, f.stopped = e.offset, True
                log.warning("tfblackbox: %s; the records before it are recorded and its "
                            "remaining bytes are kept unframed at finish", e)
                return n
            except tfrecord.FileShrankError as e:
                f.stopped = True
                log.warning("tfblackbox: %s; what was read before is recorded, the file is "
                            "no longer tailed", e)
                return n
            except OSError as e:
                f.src.warn_once("oserror", "cannot read %s (%s); retrying", f.reader.path, e)
                return n
            f.missing = False
            if not batch:
                return n
            self._check_rotation(f)
            first = f.reader.index - len(batch)
            f.pending.extend((off, first + i, data) for i, (off, data) in enumerate(batch))
            n += len(batch)
            if not self._submit(f):
                return n

    def _check_rotation(self, f):
        """Warns when a file that was read before grows after a newer one had records."""
        grew = f.had_records
        f.had_records = True
        newer = [g for g in self.files.values()
                 if g.dir == f.dir and g.name > f.name and g.had_records]
        if grew and newer:
            f.src.warn_once("rotation", "%s grew after the newer event file %s appeared in its "
                            "directory; its new records are recorded, but TensorBoard reads "
                            "only the newest file of a directory and will not show them",
                            f.reader.path, newer[0].name)

    def _submit(self, f):
        """Hands f's pending records to the writer in chunks; False if it cannot take more."""
        while f.pending:
            chunk, n = [], 0
            for rec in f.pending:
                if chunk and n + len(rec[2]) > JOB_BYTES:
                    break
                chunk.append(rec)
                n += len(rec[2])
            with self._cond:
                if self._inflight and self._inflight + n > self._budget:
                    return False
                self._inflight += n
            if not self.run.submit(functools.partial(self._job, f.src, chunk, n), n):
                self._done(n)
                return False
            del f.pending[:len(chunk)]
            self.records += len(chunk)
        return True

    def _job(self, src, chunk, n, buffers):
        try:
            decode_records(src, chunk, buffers)
        finally:
            self._done(n)

    def _done(self, n):
        with self._cond:
            self._inflight -= n
            self._cond.notify_all()

    # -- the end ----------------------------------------------------------------------------------

    def drain(self, timeout=None):
        """Stops the thread and hands the writer everything the files hold now."""
        self._stop.set()
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            refused = None   # since when the writer's queue has refused our records
            while True:
                if not self._settle(deadline):
                    return
                got = self.poll()   # with nothing in flight: every file is read this time
                waiting = sum(len(f.pending) for f in self.files.values())
                if not got and not waiting:
                    break
                if self._inflight or got:
                    refused = None
                    continue
                now = time.monotonic()   # other items fill the writer's queue
                refused = refused or now
                if now - refused > STALL_SECS or (deadline is not None and now > deadline):
                    log.warning("tfblackbox: run %s: tfevents drain stopped: the writer's "
                                "queue refused %d records for %.0f s", self.run.run_id,
                                waiting, now - refused)
                    return
                time.sleep(0.05)
            for f in self.files.values():
                self._keep_rest(f, deadline)

    def _settle(self, deadline):
        """Waits until the writer has taken every job of ours; False (with a warning) if it
        takes none for STALL_SECS -- it is closed or failed (its error is the run's) -- or
        the deadline passes."""
        with self._cond:
            left = self._inflight
            progress = time.monotonic()
            while self._inflight:
                now = time.monotonic()
                if self._inflight != left:
                    left, progress = self._inflight, now
                if now - progress > STALL_SECS or (deadline is not None and now > deadline):
                    waiting = sum(len(f.pending) for f in self.files.values())
                    log.warning("tfblackbox: run %s: tfevents drain stopped: the writer took "
                                "none of %d bytes of records for %.0f s (%d more records "
                                "waiting)", self.run.run_id, self._inflight, now - progress,
                                waiting)
                    return False
                self._cond.wait(0.1)
        return True

    def _keep_rest(self, f, deadline):
        start = f.corrupt_at
        if start is None:
            if f.stopped or f.missing or f.reader.partial <= 0:
                return
            start = f.reader.offset
            log.warning("tfblackbox: %s ends with %d bytes of an incomplete record (its writer "
                        "stopped mid-record?); they are kept unframed", f.reader.path,
                        f.reader.partial)
        try:
            with open(f.reader.path, "rb") as fh:
                fh.seek(start)
                data = fh.read()
        except OSError as e:
            log.warning("tfblackbox: could not keep the rest of %s: %s", f.reader.path, e)
            return
        if not data:
            return
        job = functools.partial(_unframed_job, f.src, start, data)
        while not self.run.submit(job, len(data)):
            if deadline is not None and time.monotonic() > deadline:
                log.warning("tfblackbox: the last %d bytes of %s could not be recorded",
                            len(data), f.reader.path)
                return
            time.sleep(0.05)


def _unframed_job(src, offset, data, buffers):
    add_unframed(src, offset, data, buffers)


_tails = weakref.WeakKeyDictionary()
_tails_lock = threading.Lock()


def tail_for(run):
    """The run's tail, made (and drained at the run's finish) on first use."""
    with _tails_lock:
        tail = _tails.get(run)
        if tail is None:
            tail = _tails[run] = TfeventsTail(run)
            run.add_finish_callback(tail.drain)
        return tail
