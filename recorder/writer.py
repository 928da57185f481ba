"""The background writer: a bounded queue of jobs, column buffers, segments on flush.

The training thread only enqueues (`submit`); decoding, Arrow conversion, Parquet encoding,
fsync and catalog registration all happen on one daemon thread. Buffers become a segment every
`flush_rows` rows, `flush_bytes` payload bytes or `flush_secs` seconds after the oldest row
arrived (so no row waits longer than flush_secs plus one write), on `flush()` and on
`close()`; the thread takes its queue every WAKE_SECS. When the queue is full the policy
`on_full` applies: "drop" (default: the training step never waits on disk; every dropped job
is counted, logged and recorded in the catalog) or "block".
A failure on the writer thread is kept and raised as WriterError on the caller's next call;
the rows it could not write stay buffered and are retried at the next flush.
"""

import collections
import logging
import threading
import time

import pyarrow as pa

from tfblackbox.schema import WriterError
from tfblackbox.schema.store import segments
from tfblackbox.schema.codecs.rows import ColumnBuffers

log = logging.getLogger("tfblackbox")

FLUSH_ROWS = 50_000          # rows buffered (all tables together) before a flush
FLUSH_BYTES = 64 << 20       # or payload bytes buffered (debug dumps, images) before a flush
STREAM_BYTES = 1 << 20       # ready-made rows of a table (dumps) encoded as a row group at once
FLUSH_SECS = 5.0             # a row's segment is written at most this long after it arrived
MAX_QUEUE_BYTES = 32 << 20   # bytes waiting for the writer thread (payload + JOB_OVERHEAD)
JOB_OVERHEAD = 512            # what a queued job costs in Python objects beyond its payload
MAX_QUEUE_JOBS = 100_000
# The writer takes its queue every WAKE_SECS (or at once when a flush asks, or the queue passes
# a quarter of its limits) rather than at every submit: woken per job, it took the GIL in the
# moment the training thread let go of it in ExtendSession and decoded the step's summary
# while training waited (py-spy: 453 of 3643 training-thread samples there; 36 after).
WAKE_SECS = 0.05


class _Flush:
    def __init__(self):
        self.done = threading.Event()
        self.error = None


class Writer:
    def __init__(self, store, run_id, writer_id, attempt, flush_rows=FLUSH_ROWS,
                 flush_secs=FLUSH_SECS, max_queue_bytes=MAX_QUEUE_BYTES, on_full="drop",
                 flush_bytes=FLUSH_BYTES):
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full={on_full!r}; expected 'drop' or 'block'")
        self.store, self.run_id = store, run_id
        self.writer_id, self.attempt = writer_id, attempt
        self.flush_rows, self.flush_secs, self.flush_bytes = flush_rows, flush_secs, flush_bytes
        self._buffered_bytes = 0
        self.max_queue_bytes, self.on_full = max_queue_bytes, on_full
        self._queue = collections.deque()
        self._queued_bytes = 0
        self._queue_since = 0.0       # when the queue last became non-empty
        self._wake = False            # a flush, a close or a filling queue wants the thread now
        self._cond = threading.Condition()
        self._error = None            # raised once on the caller's next call
        self._closed = False
        self.dropped_jobs = 0         # jobs refused because the queue was full (on_full="drop")
        self._dropped_noted = 0
        self.failed_jobs = 0
        self.rows_written = 0
        self.segments_written = 0
        self._pending = {}            # tables that failed to write, retried next flush
        # table -> (StreamEncoder, the pa.Tables in it): the segment of a table with large
        # ready-made rows is encoded row group by row group between flushes, and its rows
        # are kept until it is registered, as a failed write falls back to _pending
        self._streams = {}
        self._buffers = ColumnBuffers(attempt)
        self._thread = threading.Thread(target=self._loop, name=f"tfblackbox-writer-{run_id}",
                                        daemon=True)
        self._thread.start()

    # -- caller side ----------------------------------------------------------------------

    def submit(self, job, nbytes=0, block=False):
        """Queues job(buffers) for the writer thread. False if the job was dropped. With
        `block`, a full queue is waited for whatever `on_full` says (for producers that are
        not the training thread, such as DumpHook's ingest)."""
        self.raise_if_failed()
        nbytes += JOB_OVERHEAD
        with self._cond:
            if self._closed:
                raise WriterError(f"writer of run {self.run_id} is closed")
            while self._full(nbytes):
                if not self._thread.is_alive():
                    raise WriterError(f"writer thread of run {self.run_id} is not running")
                if self.on_full == "drop" and not block:
                    self.dropped_jobs += 1
                    if self.dropped_jobs == 1 or self.dropped_jobs % 1000 == 0:
                        log.warning("tfblackbox: writer queue of run %s is full (%d jobs, %d "
                                    "bytes); dropped %d job(s) so far", self.run_id,
                                    len(self._queue), self._queued_bytes, self.dropped_jobs)
                    return False
                self._cond.wait(0.1)
            if not self._queue:
                self._queue_since = time.monotonic()
            self._queue.append((job, nbytes))
            self._queued_bytes += nbytes
            if self._queued_bytes * 4 > self.max_queue_bytes or len(self._queue) * 4 > (
                    MAX_QUEUE_JOBS):
                self._wake = True
                self._cond.notify_all()
        return True

    def _full(self, nbytes):
        return self._queue and (len(self._queue) >= MAX_QUEUE_JOBS or
                                self._queued_bytes + nbytes > self.max_queue_bytes)

    def flush(self, timeout=None):
        """Blocks until every job submitted so far is in a registered segment."""
        marker = _Flush()
        with self._cond:
            if not self._thread.is_alive():
                raise WriterError(f"writer thread of run {self.run_id} is not running")
            self._queue.append((marker, 0))
            self._wake = True
            self._cond.notify_all()
        if not marker.done.wait(timeout):
            raise WriterError(f"writer of run {self.run_id}: flush did not finish in {timeout}s")
        if marker.error is not None:
            raise WriterError(f"writer of run {self.run_id} could not flush: "
                              f"{marker.error}") from marker.error
        self.raise_if_failed()

    def close(self, timeout=None):
        """Flushes and stops the thread. Raises WriterError if rows could not be written."""
        try:
            if self._thread.is_alive():
                self.flush(timeout)
        finally:
            with self._cond:
                self._closed = True
                self._wake = True
                self._cond.notify_all()
            self._thread.join(timeout)

    def unwritten_rows(self):
        """Rows held in memory after a failed write (retried at the next flush)."""
        return sum(t.num_rows for t in list(self._pending.values()))

    def raise_if_failed(self):
        failed, self._error = self._error, None
        if failed is not None:
            what, err = failed
            raise WriterError(f"writer of run {self.run_id}: {what}: {err}") from err

    # -- writer thread ---------------------------------------------------------------------

    def _loop(self):
        # held_since: when the oldest row not yet in a registered segment arrived. A flush is
        # due flush_secs after it, so no row waits longer than flush_secs plus one write.
        held_since = None
        while True:
            with self._cond:
                while not self._closed and not self._wake:
                    now = time.monotonic()
                    oldest = min((t for t in (held_since, self._queue and self._queue_since)
                                  if t), default=None)
                    if oldest is not None and now - oldest >= self.flush_secs:
                        break
                    if self._queue and now - self._queue_since >= WAKE_SECS:
                        break
                    self._cond.wait(WAKE_SECS)
                self._wake = False
                batch = list(self._queue)
                if batch and held_since is None:
                    held_since = self._queue_since
                self._queue.clear()
                self._queued_bytes = 0
                closed = self._closed
                self._cond.notify_all()
            markers = []
            for job, n in batch:
                if isinstance(job, _Flush):
                    markers.append(job)
                    continue
                self._buffered_bytes += n - JOB_OVERHEAD
                try:
                    job(self._buffers)
                except Exception as e:   # a job that cannot decode its input: count and report
                    self.failed_jobs += 1
                    self._fail(e, f"a recorded item could not be decoded ({self.failed_jobs} "
                                  f"so far)")
                for name, n in list(self._buffers.arrow_bytes.items()):
                    if n >= STREAM_BYTES:
                        self._stream(name, self._buffers.take_arrow(name))
                if (self._buffers.rows >= self.flush_rows or
                        self._buffered_bytes >= self.flush_bytes):
                    self._write()
            due = held_since is not None and time.monotonic() - held_since >= self.flush_secs
            if markers or due or closed or self.dropped_jobs != self._dropped_noted:
                error = self._write()
                # rows a failed write kept are tried again flush_secs later, not at once
                held_since = time.monotonic() if self._pending else None
                for m in markers:
                    m.error = error
                    m.done.set()
            if closed and not self._queue:
                return

    def _stream(self, name, table):
        encoder, kept = self._streams.get(name) or (None, [])
        try:
            if encoder is None:
                encoder = segments.StreamEncoder(name)
            encoder.write(table)
        except Exception as e:   # its rows go the usual way: written at once at the flush
            self._streams.pop(name, None)
            self._keep(name, pa.concat_tables(kept + [table]))
            log.warning("tfblackbox: writer of run %s: encoding %s rows ahead of the flush "
                        "failed (%s); they are written at the flush", self.run_id, name, e)
            return
        kept.append(table)
        self._streams[name] = (encoder, kept)

    def _keep(self, name, table):
        prev = self._pending.pop(name, None)
        self._pending[name] = table if prev is None else pa.concat_tables([prev, table])

    def _write(self):
        """Turns the buffers into segments; returns the exception if any table failed."""
        self._buffered_bytes = 0
        for name, table in self._buffers.take().items():
            if name in self._streams:
                self._stream(name, table)
            else:
                self._keep(name, table)
        error = None
        for name, (encoder, kept) in list(self._streams.items()):
            del self._streams[name]
            try:
                encoded = encoder.finish()
                self.store.write_encoded(self.run_id, name, encoded, self.writer_id)
            except Exception as e:   # written again below from the rows kept
                self._keep(name, pa.concat_tables(kept))
                log.warning("tfblackbox: writer of run %s: the %s segment encoded ahead could "
                            "not be written (%s); writing its rows again", self.run_id, name, e)
                continue
            self.rows_written += encoded.rows
            self.segments_written += 1
        for name in list(self._pending):
            table = self._pending[name]
            try:
                self.store.write_segment(self.run_id, name, table, self.writer_id)
            except Exception as e:
                error = e
                self._fail(e, f"{table.num_rows} {name} rows kept in memory, retried at the "
                              f"next flush")
                continue
            del self._pending[name]
            self.rows_written += table.num_rows
            self.segments_written += 1
        if self.dropped_jobs != self._dropped_noted:
            try:
                self.store.note_writer(self.writer_id, dropped_rows=self.dropped_jobs)
                self._dropped_noted = self.dropped_jobs
            except Exception as e:
                error = error or e
        return error

    def _fail(self, exc, what):
        log.error("tfblackbox: writer of run %s: %s: %s", self.run_id, what, exc)
        self._error = (what, exc)
        try:
            self.store.note_writer(self.writer_id, error=f"{what}: {exc!r}")
        except Exception:
            pass
