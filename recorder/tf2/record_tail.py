"""One tail for TFRecord files that another writer is still appending to: a background thread
reads what they gain and hands the records to the run's writer.

A capture subclasses RecordTail and says only what is its own:
- which files to pick up, and where in each to start (`new_files`, with a resume point);
- in which order to read them and to hand their records over (`order`);
- how a chunk of records becomes rows (`rows`), how the bytes after a file's last complete
  record do (`unframed`), and optionally a row per file, handed over before its records
  (`file_rows`);
- what to do with the bytes the writer has taken (`taken`);
- a budget: `max_bytes` of records recorded at most (`budget_reached` says so, once).
tfevents_tail.py (tf.summary's event files) and tfdbg_v2_tail.py (tfdbg v2's DebugEvent
files) are the two captures.

Every poll (POLL_SECS, or at once when `wake()`d) it picks up new files and reads what each
gained, one read a file (up to tfrecord.READ_BYTES); a half-written last record waits for the
next poll. The records go to the writer in chunks of up to JOB_BYTES, in the capture's order;
at most a quarter of the writer's queue is ours at once, so the tail never crowds out the
hooks' items, and what the queue cannot take yet waits, in memory or unread in the file.

Bad input never stops training: a file removed (it is read again if it comes back), one that
shrank, a corrupt record -- each is logged once as a warning naming the file, and everything
readable is recorded. `catch_up()` hands over everything the files hold now; `drain()` (at
finish, after the files' writer was flushed) stops the thread, catches up, and keeps the bytes
after a damaged record or a half-written last record as "unframed", so an export gives the
file back as it was.
"""

import collections
import functools
import logging
import os
import threading
import time

from tfblackbox.schema.formats import tfrecord

log = logging.getLogger("tfblackbox")

POLL_SECS = 1.0
JOB_BYTES = 1 << 20      # record bytes per writer job
STALL_SECS = 30.0        # catching up gives up when the writer takes nothing for this long


class TailFile:
    """One file being tailed: its reader (where the records read so far end), and how it
    stopped, if it did."""

    def __init__(self, path, src, resume=(0, 0)):
        self.path = path
        self.src = src                      # the capture's view of the file
        self.reader = tfrecord.RecordReader(path, *resume)
        self.corrupt_at = None
        self.stopped = self.missing = False
        self.warned = set()

    def warn_once(self, what, message, *args):
        if what not in self.warned:
            self.warned.add(what)
            log.warning("tfblackbox: " + message, *args)


class RecordTail:
    what = "record"                 # names the files in messages
    thread_name = "records"
    file_rows = None                # optional: file_rows(src, buffers), before its records

    def __init__(self, run, poll_secs=POLL_SECS, max_bytes=None):
        self.run = run
        self.poll_secs = poll_secs
        self.max_bytes = max_bytes
        self.files = {}                 # path -> TailFile
        self.records = 0                # records handed to the writer
        self.recorded_bytes = 0         # and their bytes
        self.budget_exhausted = False
        self._queue = collections.deque()   # (file, records or None, bytes) in handing order
        self._queued = 0                    # record bytes in it
        self._lock = threading.RLock()      # one poll at a time
        self._cond = threading.Condition()
        self._inflight = 0                  # bytes handed to the writer, not yet taken
        self._held_back = False             # a poll left bytes unread for the writer
        queue = getattr(getattr(run, "writer", None), "max_queue_bytes", 32 << 20)
        self._budget = max(JOB_BYTES, queue // 4)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = None

    # -- what a capture says ------------------------------------------------------------------

    def new_files(self):
        """[(path, src, (offset, index))] of files to start tailing (not in self.files)."""
        raise NotImplementedError

    def order(self, files):
        """(the order to read `files` in, the order to hand their records over in)."""
        files = sorted(files, key=lambda f: f.path)
        return files, files

    def rows(self, src, records, buffers):
        """Adds the rows of `records` [(offset, index, data)] of file `src` to `buffers`."""
        raise NotImplementedError

    def unframed(self, src, offset, index, data, buffers):
        """Adds a row keeping `data`, the bytes from `offset` on that are no record."""
        raise NotImplementedError

    def taken(self, f, upto):
        """The writer has the records of `f` up to byte `upto` (or they are past the budget)."""

    def gained(self, f):
        """`f` gave records in this poll."""

    def budget_reached(self):
        log.warning("tfblackbox: run %s: max_bytes=%d of %s records is reached (%d bytes "
                    "recorded); the rest is not recorded (training goes on)", self.run.run_id,
                    self.max_bytes, self.what, self.recorded_bytes)

    # -- the thread ------------------------------------------------------------------------------

    def start(self):
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name=f"tfblackbox-{self.thread_name}-"
                                                 f"{self.run.run_id}")
            self._thread.start()

    def wake(self):
        """Polls now rather than at the end of the current wait."""
        self._wake.set()

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:   # never take training down; try again next poll
                log.error("tfblackbox: tailing %s files failed (retrying): %s: %s", self.what,
                          type(e).__name__, e)
            self._wake.wait(self.poll_secs)
            self._wake.clear()

    # -- one poll --------------------------------------------------------------------------------

    def poll(self):
        """Picks up new files, reads what every file gained and hands it over as the writer
        can take it; returns the records read."""
        with self._lock:
            self._scan()
            read_order, hand_order = self.order(list(self.files.values()))
            read = {f.path: self._read(f) for f in read_order}
            for f in hand_order:
                for chunk in read.get(f.path, ()):
                    self._queue.append(chunk)
                    self._queued += chunk[2]
            self._submit()
            return sum(len(c[1]) for chunks in read.values() for c in chunks)

    def _scan(self):
        for path, src, resume in self.new_files():
            f = self.files[path] = TailFile(path, src, resume)
            if self.file_rows is not None and not self.budget_exhausted:
                self._queue.append((f, None, 0))

    def _read(self, f):
        """[(file, [(offset, index, data)], bytes)]: what f gained, in chunks."""
        if f.stopped:
            return []
        if self.budget_exhausted:
            self._forget(f)
            return []
        if self._inflight >= self._budget or self._queued >= self._budget:
            self._held_back = True
            return []   # the writer is behind: leave the bytes in the file for now
        try:
            chunks = self.read_chunks(f)
        except FileNotFoundError:
            if not f.missing:
                f.missing = True
                log.warning("tfblackbox: %s was removed after %d of its bytes were read; "
                            "those records are kept", f.path, f.reader.offset)
            return []
        except tfrecord.CorruptRecordError as e:
            f.corrupt_at, f.stopped = e.offset, True
            log.warning("tfblackbox: %s; the records before it are recorded and the rest of "
                        "the file is kept unframed at the end", e)
            return []
        except tfrecord.FileShrankError as e:
            f.stopped = True
            log.warning("tfblackbox: %s; what was read before is recorded, the file is no "
                        "longer tailed", e)
            return []
        except OSError as e:
            f.warn_once("oserror", "cannot read %s (%s); retrying", f.path, e)
            return []
        f.missing = False
        if chunks:
            self.gained(f)
        return chunks

    def read_chunks(self, f):
        """[(file, records, bytes)]: what f gained, in chunks of up to JOB_BYTES of record
        data; records: [(offset, index, data)], or a sequence of them (a capture's own)."""
        batch = f.reader.read()
        first = f.reader.index - len(batch)
        chunks, chunk, n = [], [], 0
        for i, (off, data) in enumerate(batch):
            if chunk and n + len(data) > JOB_BYTES:
                chunks.append((f, chunk, n))
                chunk, n = [], 0
            chunk.append((off, first + i, data))
            n += len(data)
        if chunk:
            chunks.append((f, chunk, n))
        return chunks

    def _forget(self, f):
        try:
            size = os.path.getsize(f.path)
        except OSError:
            return
        self.taken(f, size)

    def _submit(self):
        """Hands queued chunks to the writer in order; stops when it cannot take more."""
        while self._queue:
            f, chunk, queued = self._queue[0]
            n = queued
            if chunk is not None and self._over_budget(n):
                chunk = self._fit(chunk)
                n = sum(len(d) for _o, _i, d in chunk)
                self._exhaust()
                if not chunk:
                    self._clear()
                    return
            with self._cond:
                if self._inflight and self._inflight + n > self._budget:
                    return
                self._inflight += n
            if not self.run.submit(functools.partial(self._job, f.src, chunk, n), n):
                self._done(n)
                return
            self._queue.popleft()
            self._queued -= queued
            if chunk:
                self.records += len(chunk)
                self.recorded_bytes += n
                off, _i, data = chunk[-1]
                self.taken(f, off + tfrecord.HEADER + len(data) + tfrecord.FOOTER)
            if self.budget_exhausted:
                self._clear()

    def _clear(self):
        self._queue.clear()
        self._queued = 0

    def _over_budget(self, n):
        return self.max_bytes is not None and self.recorded_bytes + n > self.max_bytes

    def _fit(self, chunk):
        room, out = self.max_bytes - self.recorded_bytes, []
        for rec in chunk:
            room -= len(rec[2])
            if room < 0:
                break
            out.append(rec)
        return out

    def _exhaust(self):
        if not self.budget_exhausted:
            self.budget_exhausted = True
            self.budget_reached()

    def _job(self, src, chunk, n, buffers):
        try:
            if chunk is None:
                self.file_rows(src, buffers)
            else:
                self.rows(src, chunk, buffers)
        finally:
            self._done(n)

    def _done(self, n):
        with self._cond:
            self._inflight -= n
            self._cond.notify_all()

    # -- the end ---------------------------------------------------------------------------------

    def catch_up(self, timeout=None):
        """Reads and hands over everything the files hold now; False if the writer would not
        take it all (nothing for STALL_SECS, or past `timeout`). It waits for room to hand
        over more, not for the writer to have taken what it was handed."""
        return self._catch_up(None if timeout is None else time.monotonic() + timeout)

    def _catch_up(self, deadline):
        with self._lock:
            progress, inflight = time.monotonic(), self._inflight
            while True:
                self._held_back = False
                got = self.poll()
                if not got and not self._held_back and not self._queue:
                    return True
                now = time.monotonic()
                if got or self._inflight < inflight:
                    progress = now
                inflight = self._inflight
                if got:
                    continue
                if now - progress > STALL_SECS or (deadline is not None and now > deadline):
                    log.warning("tfblackbox: run %s: the writer took no %s records for %.0f s "
                                "(%d chunks waiting); the rest is not recorded",
                                self.run.run_id, self.what, now - progress, len(self._queue))
                    return False
                with self._cond:   # a job done makes room
                    self._cond.wait(0.05)

    def drain(self, timeout=None):
        """Stops the thread, hands over everything, and keeps what follows a file's last
        complete record (damage, or a record its writer never finished) unframed. The run's
        finish then closes the writer, which takes every job handed over."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if not self._catch_up(deadline):
            return False
        if not self.budget_exhausted:
            for f in list(self.files.values()):
                self._keep_rest(f, deadline)
        return True

    def _keep_rest(self, f, deadline):
        start = f.corrupt_at
        if start is None:
            if f.stopped or f.missing or f.reader.partial <= 0:
                return
            start = f.reader.offset
            log.warning("tfblackbox: %s ends with %d bytes of an incomplete record (its writer "
                        "stopped mid-record?); they are kept unframed", f.path,
                        f.reader.partial)
        try:
            with open(f.path, "rb") as fh:
                fh.seek(start)
                data = fh.read()
        except OSError as e:
            log.warning("tfblackbox: could not keep the rest of %s: %s", f.path, e)
            return
        if not data:
            return
        job = functools.partial(self.unframed, f.src, start, f.reader.index, data)
        give_up = time.monotonic() + STALL_SECS
        if deadline is not None:
            give_up = min(give_up, deadline)
        while not self.run.submit(job, len(data)):
            if time.monotonic() > give_up:
                log.warning("tfblackbox: the last %d bytes of %s could not be recorded (the "
                            "writer's queue refused them)", len(data), f.path)
                return
            time.sleep(0.05)
