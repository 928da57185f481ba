"""The staging area and ingest thread behind DumpHook.

TF's debug ops write to one fixed `file://` URL per training thread, on tmpfs (/dev/shm) when
there is one, so TF's executor cache is reused run after run (a new URL per run, as
DumpingDebugHook does, makes TF rebuild the executor and re-publish the partition graphs on
every step). That URL is a symlink, pointed before each dumped run at a free staging dir, so
the files of a run are its own whatever runs next. The staging dirs are reused: this thread
reads a run's files and deletes them but keeps the directories, so TF does not re-create one
directory per node-name scope on every run (measured: ~1 ms of a 91-tensor step). When no
reusable dir is free (ingest behind), the run gets a fresh dir, removed after its ingest. A
partition graph is published only when TF builds an executor, so the ingest remembers which
graph each (thread, watch config, fetches) executor ran and records each distinct graph once.

With the in-memory capture (native_capture.py), the tensors skip the files: they go to one
`memcbk://` key per thread, taken after each run with the run's Batch, and only the core
metadata and new partition graphs still come as files, to a fixed dir per thread that is never
retargeted (metadata_staging.py).
"""

import collections
import itertools
import logging
import os
import shutil
import threading
import time

from tfblackbox.schema.codecs import tfdbg_v1_rows
from tfblackbox.schema.formats import tfdbg_v1 as proto, tfdbg_v1_layout as layout

from . import metadata_staging, native_capture
from .dump_jobs import DumpJobs
from .executor_graphs import OWN_SCOPE, ExecutorGraphs, ExecutorSignatures, is_own_node
from .. import scratch

log = logging.getLogger("tfblackbox")

STAGING_PREFIX = "tfblackbox-dumps-"
REUSABLE_DIRS = 2    # per thread: one being written by TF while the other is ingested
# memcbk keys, process-wide (TF keeps every key registered): short, because TF's debug op
# lowercases and copies the URL four times a tensor (PublishDebugTensor) and a URL of up to 15
# characters ("memcbk://tfbb12") stays in std::string's inline buffer; the key this replaced,
# ~60 characters, cost four allocations a tensor (~0.3 ms a step at 2 509 tensors, perf)
_MEM_KEYS = itertools.count()
MAX_BATCH = 64       # dumped runs ingested together at most (one table, one writer job)
MAX_BATCH_BYTES = 16 << 20   # and their captured bytes: a job well within the writer's queue
# Black-box mode wakes its ingest once every few runs, not after each: a wake-up and the GIL's
# hand-over cost the training thread ~60 us of a ~0.3 ms step at 24 tensors (perf, kernel
# time), and nothing is written until a trigger fires. A NaN, a failed run or a trigger wakes
# it at once; so do queued captures of WAKE_BYTES (their memory is not yet in the ring's count).
WAKE_RUNS = 8
WAKE_BYTES = 16 << 20
WAKE_WAIT = 0.05     # seconds a queued run waits at most


def default_staging_root():
    return scratch.new_path(STAGING_PREFIX)


class Batch:
    """What the hook knows about one dumped session.run; the files come from its staging dir."""

    def __init__(self, step, wall_time, run_key, session_run, fetches_repr, feed_keys_repr,
                 executor_key, status="ok"):
        self.step, self.wall_time = step, wall_time
        self.run_key, self.session_run = run_key, session_run
        self.fetches_repr, self.feed_keys_repr = fetches_repr, feed_keys_repr
        self.executor_key, self.status = executor_key, status
        self.path = None
        self.reused = None    # the reusable staging dir it was written to (None: a fresh one)
        self.until = None     # in-memory capture: micros of its seal (its files are older)
        self.seq = 0          # its number among the runs sealed (DumpCapture.seal)
        self.records = None   # in-memory capture: the run's tensors (native_capture.Records)
        self.failed = 0       # in-memory capture: tensors it could not keep (out of memory)
        self.nonfinite = None  # in-memory capture: DebugIdentity floats with NaN/Inf (counted)
        self.records_kept = False  # black-box mode: the ring holds records (not released)


class DumpCapture:
    def __init__(self, run, staging_root=None, max_pending=1024, native=None):
        self.run = run
        self.blackbox = None           # blackbox.BlackBox: dumped steps go to its ring
        self.sealed = 0                # runs sealed so far (each batch's seq)
        self.native = native           # native_capture.Native, or None: tensors come as files
        self._mem_keys = {}            # thread slot -> its memcbk key
        self._fixed_dirs = {}          # in-memory capture: thread slot -> its fixed staging dir
        self.root = staging_root or default_staging_root()
        os.makedirs(self.root, exist_ok=True)
        self.max_pending = max_pending
        self.largest_seen = 0          # bytes of the largest one taken (queued or recorded)
        self.jobs = DumpJobs(run, self._device)   # what the ingest read, to the writer
        self._queue = collections.deque()
        self._queued_bytes = 0         # black-box mode: the captures' bytes in _queue
        self._urgent = False           # black-box mode: a queued run to look at now
        self._cond = threading.Condition()
        self._busy = 0
        self._in_use = set()           # reusable staging dirs taken by a run or the ingest
        self._targets = {}             # thread slot -> dir its staging symlink points at
        self._made = set()             # reusable staging dirs known to exist
        self._closed = False
        self._seq = 0
        self._executor_graphs = {}     # executor key -> ExecutorGraphs (its partition graphs)
        self._signatures = ExecutorSignatures()
        self._device_names = {}        # device dir -> real device name
        self._thread = threading.Thread(target=self._loop, name="tfblackbox-dump-ingest",
                                        daemon=True)
        self._thread.start()

    # -- training thread -------------------------------------------------------------------

    def slot_dir(self, slot):
        """The thread's staging URL path: a symlink to the dir of its next dumped run."""
        return os.path.join(self.root, f"t{slot}", "cur")

    def url(self, slot):
        """The thread's staging URL (files mode: the symlink; in-memory: its fixed dir)."""
        if self.native is not None:
            return "file://" + self._fixed_dir(slot)
        return "file://" + self.slot_dir(slot)

    def _fixed_dir(self, slot):
        path = self._fixed_dirs.get(slot)
        if path is None:
            path = self._fixed_dirs[slot] = metadata_staging.thread_dir(self.root, slot)
        return path

    def tensor_url(self, slot):
        """Where thread `slot`'s debug ops send tensors: its memcbk key, or the staging URL."""
        if self.native is None:
            return self.url(slot)
        key = self._mem_keys.get(slot)
        if key is None:
            key = self._mem_keys[slot] = f"tfbb{next(_MEM_KEYS)}"
            self.native.register(key, hold=self.blackbox is not None)
        return "memcbk://" + key

    def take(self, slot, batch):
        """Moves thread `slot`'s captured tensors into its finished run's batch."""
        key = self._mem_keys.get(slot)
        if key is not None:
            batch.records, batch.failed, batch.nonfinite = self.native.take(key)
            if batch.records is not None:
                self.largest_seen = max(self.largest_seen, batch.records.size)

    def acquire(self, slot):
        """Points thread `slot`'s staging URL at a dir for its next dumped run, a free
        reusable one if there is one, else a fresh one. Returns (dir, reusable). The in-memory
        capture's runs share the thread's fixed dir: (that dir, False), nothing to point."""
        if self.native is not None:
            return self._fixed_dir(slot), False
        base = os.path.join(self.root, f"t{slot}")
        with self._cond:
            path = next((p for p in (os.path.join(base, f"s{k}") for k in range(REUSABLE_DIRS))
                         if p not in self._in_use), None)
            reusable = path is not None
            if reusable:
                self._in_use.add(path)
            else:
                self._seq += 1
                path = os.path.join(base, f"b{self._seq:08d}")
        try:
            if path not in self._made:
                os.makedirs(path, exist_ok=True)
                if reusable:
                    self._made.add(path)
            if self._targets.get(slot) != path:
                link = self.slot_dir(slot)
                tmp = link + ".next"           # only this thread retargets its link
                if os.path.lexists(tmp):
                    os.remove(tmp)
                os.symlink(path, tmp)
                os.replace(tmp, link)          # atomic: TF sees the old dir or the new one
                self._targets[slot] = path
        except BaseException:
            self.release(path if reusable else None)
            raise
        return path, reusable

    def release(self, path):
        """Gives back a reusable dir taken by acquire() for a run that will not be sealed."""
        with self._cond:
            self._in_use.discard(path)

    def pending(self):
        with self._cond:
            return len(self._queue) + self._busy

    def seal(self, slot, batch):
        """Queues the run's staging dir (batch.path, from acquire()) with its metadata."""
        if self.native is not None:   # after its run, before the thread's next one
            batch.until = int(time.time() * 1e6)
        with self._cond:
            self.sealed += 1
            batch.seq = self.sealed
            self._queue.append(batch)
            if self._lazy:
                self._queued_bytes += batch.records.size if batch.records is not None else 0
                self._urgent = self._urgent or bool(batch.nonfinite) or batch.status != "ok"
                if len(self._queue) > 1 and not self._wake_due():
                    return    # the first queued one woke it: it waits WAKE_WAIT at most now
            self._cond.notify_all()

    def _wake_due(self):
        """(Under _cond) whether the queued runs are to be ingested now."""
        return not self._lazy or self._urgent or len(self._queue) >= WAKE_RUNS or (
            self._queued_bytes >= WAKE_BYTES)

    @property
    def _lazy(self):
        """Black-box mode in memory wakes its ingest lazily (through files, a queued run keeps
        a staging dir: past two a thread, each would be a fresh one, made and removed)."""
        return self.blackbox is not None and self.native is not None

    def wake(self):
        """A trigger fired: the ingest thread looks at it now."""
        with self._cond:
            self._cond.notify_all()

    def close(self, timeout=120.0):
        """Ingests everything queued, stops the thread and removes the staging area."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("tfblackbox: DumpHook: ingest did not finish in %.0fs; %d dumped run(s) "
                      "not recorded", timeout, self.pending())
        for key in self._mem_keys.values():
            self.native.close(key)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- ingest thread ---------------------------------------------------------------------

    def _loop(self):
        while True:
            with self._cond:
                while not self._closed:
                    if self._queue and (self._wake_due() or self.blackbox.waiting()):
                        break
                    if self.blackbox is not None and self.blackbox.due():
                        break          # a trigger for steps already in the ring
                    notified = self._cond.wait(WAKE_WAIT if self._queue else 1.0)
                    if self._queue and not notified:   # waited long enough
                        break
                if not self._queue:
                    if not self._closed:      # a trigger fired for steps already ingested
                        self.blackbox.settle()
                        continue
                    if self.blackbox:         # the end: triggers still waiting write now
                        self.blackbox.settle(final=True)
                    return
                # everything queued is ingested together: one table and one writer job, so
                # Arrow's and the writer's fixed costs are paid once however far behind
                batches, size = [], 0
                while self._queue and len(batches) < MAX_BATCH and (
                        not batches or size < MAX_BATCH_BYTES):
                    batches.append(self._queue.popleft())
                    records = batches[-1].records
                    size += records.size if records is not None else self.jobs.largest_run
                self._busy = len(batches)
                if self._lazy:   # what stays queued (only the lazy wake counts it)
                    self._queued_bytes = sum(b.records.size for b in self._queue
                                             if b.records is not None)
                    self._urgent = any(b.nonfinite or b.status != "ok" for b in self._queue)
            read = []
            for batch in batches:
                try:
                    read.append(self._read(batch))
                except Exception as e:   # never take the training down
                    self._failed(batch, e)
                finally:
                    self._done_reading(batch)
            try:
                if self.blackbox is None:
                    self.jobs.record(read)
                else:
                    self.blackbox.take(read)
            except Exception as e:   # never take the training down
                log.error("tfblackbox: DumpHook could not record the dumps of step(s) %s: %s",
                          ", ".join(str(r["step"]) for r in read), e)
            finally:
                with self._cond:
                    self._busy = 0
                    self._cond.notify_all()
            # the parsed tensors' data are slices of the capture's buffers (Records): dropped
            # now, not when the next batch comes, so the capture gets its buffers back
            read = batches = None

    def _failed(self, batch, e):
        log.error("tfblackbox: DumpHook could not record the dumps of step %s: %s", batch.step, e)
        # whatever is left must not be taken for the next run's (a fixed dir's leftovers are
        # older than the next run's start: read_run drops them)
        if batch.reused:
            with self._cond:
                self._made.discard(batch.reused)
            shutil.rmtree(batch.reused, ignore_errors=True)

    def _done_reading(self, batch):
        if batch.records is not None and not batch.records_kept:
            batch.records.release()
        if not batch.reused and batch.until is None:
            shutil.rmtree(batch.path, ignore_errors=True)
        with self._cond:
            self._in_use.discard(batch.reused)
            self._cond.notify_all()

    def _read(self, batch):
        """One dumped run's files and captured tensors, as what DumpJobs.record() needs."""
        if batch.until is not None:
            d = metadata_staging.read_run(batch.path, int(batch.wall_time * 1e6) - 1,
                                          batch.until)
        else:
            d = layout.read_dump_dir(batch.path, remove=True)
        # black-box mode: the ring keeps the captured buffer as it is, parsed only if a trigger
        # writes its step (parsing 2 500 tensors in Python cost ~25 ms a step, mostly thrown
        # away with the step)
        lazy = self.blackbox is not None and batch.records is not None
        if batch.records is not None and not lazy:
            d.tensors.extend(native_capture.parse_records(batch.records.view))
            batch.records.release()
        if batch.failed:
            log.error("tfblackbox: DumpHook: %d tensor(s) of step %s could not be captured (out "
                      "of memory); the step is recorded with status 'incomplete'", batch.failed,
                      batch.step)
            batch.status = "incomplete" if batch.status == "ok" else batch.status
        for path in d.unknown:
            log.warning("tfblackbox: DumpHook: unexpected file %s in the staging area; skipped",
                        path)
            if batch.reused or batch.until is not None:   # it would come back with every run
                shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else (
                    os.remove(path))
        ekey = (batch.executor_key, self._signatures.of(d.core_metadata))
        if d.graphs:
            self._executor_graphs[ekey] = ExecutorGraphs(d.graphs)
        executor = self._executor_graphs.get(ekey)   # this step's, whatever runs later
        step = batch.step
        entry = {"step": step, "seq": batch.seq, "run_key": batch.run_key,
                 "status": batch.status, "nonfinite": batch.nonfinite}

        def complete():
            """The tensors and the run row (at once, or when the ring's step is written)."""
            meta = d.core_metadata
            if meta:
                meta = proto.with_global_step(meta, step, drop_outputs=OWN_SCOPE)
            graphs = executor.parsed(self._device_names.update) if executor else {}
            # the executor's graphs, each recorded once (the first run written that ran it)
            entry["graphs"] = [(self._device(x), g, wall, graph_def) for x, (g, wall, graph_def)
                               in sorted(graphs.items())]
            if "records" in entry:
                records = entry.pop("records")
                try:
                    d.tensors.extend(native_capture.parse_records(records.fill().view))
                except Exception as e:   # out of memory, damage: the run row is still written
                    log.error("tfblackbox: DumpHook: the tensors of dumped step %s could not be "
                              "read back (%s); the step is recorded with status 'incomplete' "
                              "and without them", step, e)
                    if entry["status"] == "ok":
                        entry["status"] = "incomplete"
                finally:
                    records.release()
            for t in d.tensors:
                if t.device_name:              # the in-memory capture knows the true name
                    self._device_names[t.device_dir] = t.device_name
            tensors = [t for t in d.tensors if not is_own_node(t.node_name)]
            devices = sorted({self._device(t.device_dir) for t in tensors} |
                             {self._device(x) for x in graphs})
            run_row = tfdbg_v1_rows.debug_run_row(
                step, batch.wall_time, batch.run_key, batch.session_run, entry["status"],
                "DumpHook", d.core_metadata_name, meta,
                proto.log_message_event(batch.fetches_repr),
                proto.log_message_event(batch.feed_keys_repr), devices,
                [(self._device(x), graphs[x][0].graph_hash, graphs[x][0].timestamp,
                  graphs[x][1], None) for x in sorted(graphs)], tensors)
            entry.update(tensors=tensors, run_row=run_row,
                         nbytes=run_row["tensor_bytes"] + len(meta or b""))
            return entry

        if lazy:
            batch.records_kept = True
            entry.update(records=batch.records, complete=complete,
                         ring_bytes=batch.records.size + len(d.core_metadata or b""))
            return entry
        return complete()

    def _device(self, dev_dir):
        name = self._device_names.get(dev_dir)
        if name is None:
            name = self._device_names[dev_dir] = layout.device_name_from_dir(dev_dir)
        return name
