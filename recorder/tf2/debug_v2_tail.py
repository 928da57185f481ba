"""A background thread that reads the DebugEvent files TF writes into a staging dir (one
`enable_dump_debug_info` session) and hands their records to the run's writer.

Every poll (POLL_SECS) it picks up new files and reads what each gained; a half-written last
record waits for the next poll. The records go to the writer in chunks of up to JOB_BYTES,
turned into rows there (schema/codecs/tfdbg_v2_rows.py); at most a quarter of the writer's queue is
ours at once, and what the queue cannot take yet waits (in memory, or unread in the file).
Bytes taken by the writer are freed from the staging files (staging.HolePuncher).

Order matters for a store cut short by a kill -9: a graph execution trace names ops that the
`.graphs` file created, and TF flushes the non-execution files before the circular buffers.
So each poll reads the execution files first and the others after, and hands the others'
records to the writer first: whatever prefix of the handed chunks reaches the store, the
graphs a trace needs are in it.

`max_bytes` bounds the record bytes recorded: the chunk that would pass it is cut to what
fits, one warning is logged, and from then on the files are only freed, not recorded.
Damage never stops training: a corrupt record or a file that shrank is logged once naming
the file; `drain()` keeps the bytes after a damaged or half-written last record unframed.
"""

import collections
import functools
import logging
import os
import threading
import time

from tfblackbox.schema.formats import tfdbg_v2, tfrecord
from tfblackbox.schema.codecs.tfdbg_v2_rows import BlobIndex, FileSource, add_rows, file_row, unframed_row

from .staging import HolePuncher

log = logging.getLogger("tfblackbox")

POLL_SECS = 1.0
JOB_BYTES = 1 << 20
STALL_SECS = 30.0        # drain gives up when the writer takes nothing for this long
RECORDS = "tfdbg2_records"


class _File:
    def __init__(self, path, session):
        self.path = path
        self.src = FileSource(os.path.basename(path), session)
        self.reader = tfrecord.RecordReader(path)
        self.corrupt_at = None
        self.stopped = False


class DebugV2Tail:
    def __init__(self, run, root, session, max_bytes=None, poll_secs=POLL_SECS, blobs=None):
        self.run, self.root, self.session = run, root, session
        self.max_bytes, self.poll_secs = max_bytes, poll_secs
        self.files = {}                 # name -> _File
        self.recorded_bytes = 0         # record bytes handed to the writer
        self.records = 0
        self.budget_exhausted = False
        # the source-file hashes known to the store: used on the writer thread only, and
        # shared by a run's sessions (what one added may not be written yet)
        self.blobs = blobs if blobs is not None else BlobIndex(run.store)
        # source files the writer dropped before storing them are stored again when needed
        run.writer.on_drop(lambda tables: "tfdbg2_blobs" in tables and self.blobs.forget())
        self.punch = HolePuncher()
        self._queue = collections.deque()   # (file, records, bytes) in the order to hand over
        self._queued = 0                    # record bytes in it
        self._lock = threading.RLock()      # one poll at a time
        self._cond = threading.Condition()
        self._inflight = 0
        self._held_back = False         # a poll left bytes unread for the writer to catch up
        queue = getattr(getattr(run, "writer", None), "max_queue_bytes", 32 << 20)
        self._budget = max(JOB_BYTES, queue // 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"tfblackbox-tfdbg2-{run.run_id}")
        self._thread.start()

    def _loop(self):
        while not self._stop.wait(self.poll_secs):
            try:
                self.poll()
            except Exception as e:   # never take training down; try again next poll
                log.error("tfblackbox: reading tfdbg v2 files failed (retrying): %s: %s",
                          type(e).__name__, e)

    # -- one poll -------------------------------------------------------------------------------

    def poll(self):
        """Reads what every file gained and hands it over; returns the records read."""
        with self._lock:
            self._scan()
            files = sorted(self.files.values(), key=lambda f: f.src.name)
            first = [f for f in files if f.src.kind in tfdbg_v2.EXECUTION_KINDS]
            later = [f for f in files if f.src.kind not in tfdbg_v2.EXECUTION_KINDS]
            read = {f.src.name: self._read(f) for f in first + later}
            for f in later + first:
                for chunk in read[f.src.name]:
                    self._queue.append(chunk)
                    self._queued += chunk[2]
            self._submit()
            return sum(len(items) for chunks in read.values() for _f, items, _n in chunks)

    def _scan(self):
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for name in names:
            if name in self.files or tfdbg_v2.parse_name(name) is None:
                continue
            f = self.files[name] = _File(os.path.join(self.root, name), self.session)
            if not self.budget_exhausted:
                self._queue.append((f, None, 0))   # the "file" row

    def _read(self, f):
        """[(file, [(offset, index, data)], bytes)] chunks of what f gained since last time."""
        if f.stopped:
            return []
        if self.budget_exhausted:
            self._free_all(f)
            return []
        if self._inflight >= self._budget or self._queued >= self._budget:
            self._held_back = True
            return []   # the writer is behind: leave the bytes in the file for now
        try:
            batch = f.reader.read()
        except tfrecord.CorruptRecordError as e:
            f.corrupt_at, f.stopped = e.offset, True
            log.warning("tfblackbox: %s; the records before it are recorded and the rest of "
                        "the file is kept unframed when the session ends", e)
            return []
        except (tfrecord.FileShrankError, FileNotFoundError) as e:
            f.stopped = True
            log.warning("tfblackbox: tfdbg v2 file %s is no longer readable (%s); what was "
                        "read before is recorded", f.path, e)
            return []
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

    def _free_all(self, f):
        try:
            self.punch.free(f.path, os.path.getsize(f.path))
        except OSError:
            pass

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
            job = functools.partial(self._job, f.src, chunk, n)
            if not self.run.submit(job, n):
                self._done(n)
                return
            self._queue.popleft()
            self._queued -= queued
            if chunk:
                self.records += len(chunk)
                self.recorded_bytes += n
                off, _i, data = chunk[-1]
                self.punch.free(f.path, off + tfrecord.HEADER + len(data) + tfrecord.FOOTER)
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
            log.warning("tfblackbox: run %s: enable_dump_debug_info's max_bytes=%d is reached "
                        "(%d bytes of records recorded); the rest of this tfdbg v2 session is "
                        "not recorded (training goes on)", self.run.run_id, self.max_bytes,
                        self.recorded_bytes)

    def _job(self, src, chunk, n, buffers):
        try:
            if chunk is None:
                buffers.add_table(RECORDS, file_row(src))
            else:
                add_rows(buffers, src, chunk, self.blobs)
        finally:
            self._done(n)

    def _done(self, n):
        with self._cond:
            self._inflight -= n
            self._cond.notify_all()

    # -- the end ------------------------------------------------------------------------------

    def catch_up(self, timeout=None):
        """Reads and hands over everything the files hold now (TF's writer was just flushed);
        False if the writer would not take it all before the deadline. It does not wait for
        the writer to have taken what it was handed, only for room to hand over more."""
        deadline = None if timeout is None else time.monotonic() + timeout
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
                    log.warning("tfblackbox: run %s: the writer took no tfdbg v2 records for "
                                "%.0f s (%d chunks waiting)", self.run.run_id, now - progress,
                                len(self._queue))
                    return False
                with self._cond:   # a job done makes room
                    self._cond.wait(0.05)

    def drain(self, timeout=None):
        """Stops the thread, hands over everything, and keeps what follows a file's last
        complete record (damage, or a record TF never finished) unframed."""
        self._stop.set()
        self._thread.join(timeout)
        if not self.catch_up(timeout):
            return False
        for f in self.files.values():
            if not self.budget_exhausted:
                self._keep_rest(f)
        return True   # the run's finish closes the writer, which takes every job handed over

    def _keep_rest(self, f):
        start = f.corrupt_at
        if start is None:
            if f.stopped or f.reader.partial <= 0:
                return
            start = f.reader.offset
            log.warning("tfblackbox: %s ends with %d bytes of an incomplete record; they are "
                        "kept unframed", f.path, f.reader.partial)
        try:
            with open(f.path, "rb") as fh:
                fh.seek(start)
                data = fh.read()
        except OSError as e:
            log.warning("tfblackbox: could not keep the rest of %s: %s", f.path, e)
            return
        if data:
            job = functools.partial(_unframed_job, f.src, start, f.reader.index, data)
            deadline = time.monotonic() + STALL_SECS
            while not self.run.submit(job, len(data)):
                if time.monotonic() > deadline:
                    log.warning("tfblackbox: the last %d bytes of %s could not be recorded "
                                "(the writer's queue refused them)", len(data), f.path)
                    return
                time.sleep(0.05)


def _unframed_job(src, offset, index, data, buffers):
    buffers.add_table(RECORDS, unframed_row(src, offset, index, data))
