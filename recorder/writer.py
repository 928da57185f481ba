"""The background writer: a bounded queue of jobs, column buffers, segments on flush.

The training thread only enqueues (`submit`); decoding, Arrow conversion, Parquet encoding,
fsync and catalog registration all happen on one daemon thread. Buffers become a segment every
`flush_rows` rows, `flush_bytes` payload bytes or `flush_secs` seconds after the oldest row
arrived (so no row waits longer than flush_secs plus one write), on `flush()` and on
`close()`; the thread takes its queue every WAKE_SECS. When the queue is full the policy
`on_full` applies: "drop" (default: the training step never waits on disk; every dropped job
is counted, logged and recorded in the catalog) or "block".
A failure on the writer thread is kept and raised as WriterError on the caller's next call;
the rows it could not write are held (held.py) and tried again flush_secs later, the metric
tables first (flushing.py); bulk tables (media, raw records, dumps) leave the last 1% of the
disk to the metrics and the catalog. What the writer holds for rows not in the store is
bounded by `max_unwritten_bytes`: past it, held rows are dropped (bulk first, the oldest
first), counted per table in the catalog (`losses`) and logged at ERROR.
"""

import collections
import logging
import threading
import time

from tfblackbox.schema import WriterError
from tfblackbox.schema.codecs.rows import ColumnBuffers

from .flushing import Flushing
from .held import Held

log = logging.getLogger("tfblackbox")

FLUSH_ROWS = 50_000          # rows buffered (all tables together) before a flush
FLUSH_BYTES = 64 << 20       # or payload bytes buffered (debug dumps, images) before a flush
STREAM_BYTES = 1 << 20       # ready-made rows of a table (dumps) encoded as a row group at once
FLUSH_SECS = 5.0             # a row's segment is written at most this long after it arrived
MAX_QUEUE_BYTES = 32 << 20   # bytes waiting for the writer thread (payload + JOB_OVERHEAD)
JOB_OVERHEAD = 512            # what a queued job costs in Python objects beyond its payload
MAX_QUEUE_JOBS = 100_000
FAIL_REPEAT_SECS = 60.0      # a write failing the same way is reported again after this
# The writer takes its queue every WAKE_SECS (or at once when a flush asks, or the queue passes
# a quarter of its limits) rather than at every submit: woken per job, it took the GIL in the
# moment the training thread let go of it in ExtendSession and decoded the step's summary
# while training waited (py-spy: 453 of 3643 training-thread samples there; 36 after).
WAKE_SECS = 0.05
# Memory for rows not yet in the store (held after failed writes, buffered, encoded ahead),
# past which held rows are dropped: 4 flushes' worth of flush_bytes, so a disk full for a
# while loses nothing of a run that dumps ~10 MB a second for 25 s, yet small next to a
# training process (gigabytes); hours of metrics (256 MiB is ~2.5 million scalar rows).
MAX_UNWRITTEN_BYTES = 256 << 20


class _Flush:
    def __init__(self):
        self.done = threading.Event()
        self.error = None


class Writer(Flushing):
    def __init__(self, store, run_id, writer_id, attempt, flush_rows=FLUSH_ROWS,
                 flush_secs=FLUSH_SECS, max_queue_bytes=MAX_QUEUE_BYTES, on_full="drop",
                 flush_bytes=FLUSH_BYTES, max_unwritten_bytes=MAX_UNWRITTEN_BYTES):
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full={on_full!r}; expected 'drop' or 'block'")
        self.store, self.run_id = store, run_id
        self.writer_id, self.attempt = writer_id, attempt
        self.flush_rows, self.flush_secs, self.flush_bytes = flush_rows, flush_secs, flush_bytes
        self.max_unwritten_bytes = max_unwritten_bytes
        self._buffered_bytes = 0      # payload of the jobs buffered (flush_bytes)
        self._column_bytes = 0        # of it, what went to column lists (not Arrow tables)
        self.max_queue_bytes, self.on_full = max_queue_bytes, on_full
        self._queue = collections.deque()
        self._queued_bytes = 0
        self._queue_since = 0.0       # when the queue last became non-empty
        self._wake = False            # a flush, a close or a filling queue wants the thread now
        self._cond = threading.Condition()
        self._error = None            # raised once on the caller's next call
        self._closed = self._closing = False
        self.dropped_jobs = 0         # jobs refused because the queue was full (on_full="drop")
        self._dropped_noted = 0
        self.failed_jobs = 0
        self.rows_written = 0
        self.segments_written = 0
        self._held = Held()           # rows a write could not store, tried again when due
        self._unstored = False        # whether the last write left rows held (holding())
        self._last_write = 0.0        # when a flush last tried to write (time.monotonic)
        self._failed = {}             # failure key -> when it was last reported (_fail)
        self._losses_noted = {}       # the held rows' losses as the catalog has them
        self._drop_logged = None      # when drops were last logged
        self._listeners = []          # fn(tables) after rows of `tables` were dropped
        # table -> (StreamEncoder, the pa.Tables in it): the segment of a table with large
        # ready-made rows is encoded row group by row group between flushes, and its rows
        # are kept until it is registered, as a failed write falls back to holding them
        self._streams = {}
        self._kept_bytes = 0          # of the Arrow tables in _streams
        self._room = 0                # at most what the bound leaves (_run_job's fast path)
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
            self._error = None   # reported here, not again at the next call
            raise WriterError(f"writer of run {self.run_id} could not flush: "
                              f"{marker.error}") from marker.error
        self.raise_if_failed()

    def close(self, timeout=None):
        """Flushes and stops the thread. Raises WriterError if rows could not be written."""
        self._closing = True     # the last flushes: bulk rows may use the headroom
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
        return self._held.rows()

    def held_bytes(self):
        """Bytes held for rows not in the store: held after failed writes, encoded ahead,
        and buffered (the queue has its own bound, max_queue_bytes). Read in the order rows
        move (buffers -> encoded ahead -> held) backwards, so that another thread reading
        it while rows move never counts them twice."""
        held, kept = self._held.nbytes, self._kept_bytes
        encoded = sum(e.nbytes for e, _k in list(self._streams.values()))
        return (held + kept + encoded + sum(list(self._buffers.arrow_bytes.values())) +
                self._column_bytes)

    def holding(self):
        """Whether rows a write could not store are held (and may be dropped): producers
        that encode rows against earlier ones should make them independent meanwhile. Read
        at the end of each write: during one, the rows it is writing sit in the held pieces
        too, and a dump ingest that looked then made every dump of that step a key frame
        (6 of 40 steps of tools/bench_dump at 2 509 tensors, ~10% more bytes)."""
        return self._unstored

    def on_drop(self, fn):
        """Calls fn(tables) on the writer thread after held rows of `tables` were dropped
        (producers that store something once, or encode against earlier rows, start over)."""
        self._listeners.append(fn)

    def losses(self):
        """{(table, reason): (rows, bytes, first step, last step)} of rows dropped so far."""
        return {k: tuple(v) for k, v in list(self._held.lost.items())}

    def give_up(self):
        """After close: counts the rows still held as lost ('finish'); returns losses()."""
        if not self._thread.is_alive():
            self._held.give_up("finish")
        return self.losses()

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
                self._run_job(job, n)
            due = held_since is not None and time.monotonic() - held_since >= self.flush_secs
            # (rows dropped past the bound are noted with the next due write: it is at most
            # flush_secs away while rows are held, and sooner would mean retries as often)
            if markers or due or closed or self.dropped_jobs != self._dropped_noted:
                error = self._write(final=closed or self._closing)
                # rows a failed write kept are tried again flush_secs later, not at once
                held_since = time.monotonic() if self._held else None
                for m in markers:
                    m.error = error
                    m.done.set()
            if closed and not self._queue:
                return

    def _run_job(self, job, n):
        # room for what the job adds (its rows' columns cost ~1/8 more than its payload);
        # _room, what the bound leaves less what jobs added since it was measured, spares
        # most jobs the measuring
        need = (n - JOB_OVERHEAD) * 9 // 8
        if need > self._room:
            self._make_room(need)
            self._room = self.max_unwritten_bytes - self.held_bytes()
        self._room -= need
        sizes = self._buffers.arrow_bytes
        arrow = sum(sizes.values()) if sizes else 0
        self._buffered_bytes += n - JOB_OVERHEAD
        try:
            job(self._buffers)
        except Exception as e:   # a job that cannot decode its input: count and report
            self.failed_jobs += 1
            self._fail(e, f"a recorded item could not be decoded ({self.failed_jobs} so far)")
        sizes = self._buffers.arrow_bytes
        arrow = (sum(sizes.values()) if sizes else 0) - arrow   # what the job added as Arrow
        self._column_bytes += max(0, n - JOB_OVERHEAD - arrow)
        for name, size in list(self._buffers.arrow_bytes.items()):
            if size >= STREAM_BYTES:
                table = self._held.admit(name, self._buffers.take_arrow(name))
                # after a failed write nothing is encoded ahead: it would be held twice
                self._held.add(name, table) if self._held else self._stream(name, table)
        if self._buffers.rows >= self.flush_rows or self._buffered_bytes >= self.flush_bytes:
            if self._held:   # a write failed: tried again when due, not now
                self._hold_buffers()
            else:
                self._write()
        if arrow > need:   # the job's estimate was short
            self._make_room(0)
            self._room = 0

    def _fail(self, exc, what, key=None):
        """Logs a failure at ERROR, keeps it for the caller's next call and records it on the
        attempt; the same one again (`key`: a table's write failing the same way) only once
        a FAIL_REPEAT_SECS (a full disk is retried often: held rows before a drop)."""
        if key is not None:
            now = time.monotonic()
            if now - self._failed.get(key, -FAIL_REPEAT_SECS) < FAIL_REPEAT_SECS:
                return
            self._failed[key] = now
        log.error("tfblackbox: writer of run %s: %s: %s", self.run_id, what, exc)
        self._error = (what, exc)
        try:
            self.store.note_writer(self.writer_id, error=f"{what}: {exc!r}")
        except Exception:
            pass

