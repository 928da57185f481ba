"""DumpHook: tfdbg's DumpingDebugHook, recorded into the store on chosen steps only.

    hook = recorder.DumpHook(watch_fn=None, every_n_steps=100, steps=[(0, 5)], max_bytes=1 << 30)

Watch semantics are DumpingDebugHook's: `watch_fn(fetches, feeds)` returns a tfdbg
`WatchOptions` (debug ops, default ["DebugIdentity"]; node-name / op-type / dtype allowlist
regexes, re.match, combined with AND; tolerate_debug_op_creation_failures); without one, every
tensor is watched. `thread_name_filter` (re.match on the thread name) limits dumping to some
threads. A step is dumped when `step % every_n_steps == 0` and, if `steps` is given, the step is
in one of its ranges (ints, (lo, hi) pairs with hi exclusive, `range`s or "lo:hi" strings).

How: see dump_capture.py. TF writes each dumped run to a fixed per-thread staging URL on tmpfs,
a symlink the hook points at a free staging dir before the run; a background thread turns each
run's files into rows and empties the dir for a later run. With `capture="auto"` (the default,
or $TFBLACKBOX_DUMP_CAPTURE) the tensors themselves skip the files: the in-memory capture
(native_capture.py, built once per TensorFlow install) takes them from TF's debug ops, and
only the core metadata and partition graphs come as files, to one fixed dir per thread
(metadata_staging.py). `capture="files"` never builds it;
`capture="memory"` raises when it cannot be had. `hook.capture` says which one is in use.

The global step (read exactly, see global_step.py) is fetched with the run and written into
TF's core metadata (DumpingDebugHook under MonitoredSession leaves it at -1/0). DumpHook
fetches the global-step read op, so that op appears in the dumps too.

Disk budget: `max_bytes` bounds the uncompressed bytes of recorded dumps (tensor Events, new
partition graphs, core metadata), which is an upper bound of their size in the store. Before a
step is dumped, the hook checks that the bytes recorded so far plus the largest dumped step so
far (for each one still being ingested too) stay within the budget; when they would not, it
stops dumping for the rest of the run, logs one warning saying so, and sets
`hook.budget_exhausted`; training goes on. Dumping is also skipped (counted in
`hook.skipped_busy`) while `max_pending` dumped runs, or more than `max_pending_bytes` of them
(the largest dumped run so far times those waiting; 256 MiB), wait for ingestion. The ingest
takes up to 64 waiting runs in one go, so a backlog costs it less per run: the burst at the
start (TF building its executors, the first graphs parsed, pyarrow's first calls) is
absorbed instead of skipping steps.

Black-box mode (blackbox.py): with `keep_last=K` dumped steps go to a ring in memory (K+1
steps, at most `max_ring_bytes`) and are written only when a trigger of `persist_on` fires
("nan", "exception", "signal", ("spike", tag, factor), a callable): the ring up to the trigger's
step, then `after` more dumped steps. `hook.triggers` lists what fired; `max_bytes` then
bounds what is written.

A session.run that raises ends MonitoredSession without calling any hook's end(); the hook
then seals that run's partial dumps (status 'error') and writes what is queued when the run
finishes (recorder.finish, or at exit).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from tfblackbox.schema.formats import tfdbg_v1_layout as layout

from . import blackbox, native_capture
from .. import run as run_mod
from .blackbox_hook import BlackBoxHook
from .dump_capture import Batch, DumpCapture
from .global_step import StepTracker

log = logging.getLogger("tfblackbox")

_SESSION_RUNS = itertools.count()   # process-wide: run dir names never repeat in an attempt
# A watch on a name no node can have (TF node names start with a letter, digit or '.') carries
# the staging URL, so with the in-memory capture TF still writes the core metadata and
# partition graphs there: it publishes those to every URL of every watch.
METADATA_WATCH = "__tfblackbox_metadata__"


def _parse_steps(steps):
    if steps is None:
        return None
    if isinstance(steps, (int, str, range)) or (
            isinstance(steps, tuple) and len(steps) == 2 and all(
                s is None or isinstance(s, int) for s in steps)):
        steps = [steps]
    ranges = []
    for item in steps:
        if isinstance(item, bool):
            raise ValueError(f"steps: {item!r} is not a step")
        if isinstance(item, int):
            ranges.append((item, item + 1))
        elif isinstance(item, range):
            if item.step != 1:
                raise ValueError(f"steps: {item!r}: only ranges with step 1")
            ranges.append((item.start, item.stop))
        elif isinstance(item, str) and ":" in item:
            lo, hi = item.split(":", 1)
            try:
                ranges.append((int(lo) if lo.strip() else None, int(hi) if hi.strip() else None))
            except ValueError:
                raise ValueError(f"steps: {item!r} is not a range 'lo:hi' of whole steps (either "
                                 f"may be empty)") from None
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            ranges.append((item[0], item[1]))
        else:
            raise ValueError(f"steps: {item!r}; expected an int, (lo, hi), range or 'lo:hi'")
    return ranges


class DumpHook(BlackBoxHook, tf.compat.v1.train.SessionRunHook):
    def __init__(self, store: Any = None, watch_fn: Callable | None = None,
                 thread_name_filter: str | None = None, *, every_n_steps: int = 1,
                 steps: Sequence | None = None, max_bytes: int | None = None,
                 staging_dir: str | None = None, max_pending: int = 1024,
                 max_pending_bytes: int = 256 << 20, capture: str | None = None,
                 keep_last: int | None = None, persist_on: Sequence = ("nan", "exception"),
                 after: int = 0, max_ring_bytes: int | None = None) -> None:
        if int(every_n_steps) < 1:
            raise ValueError(f"every_n_steps={every_n_steps!r}; expected a positive integer")
        if watch_fn is not None and not callable(watch_fn):
            raise TypeError("watch_fn is not callable")
        if max_bytes is not None and int(max_bytes) < 0:
            raise ValueError(f"max_bytes={max_bytes!r}; expected a number of bytes >= 0")
        self._store = store
        self._watch_fn = watch_fn
        self._thread_filter = re.compile(thread_name_filter) if thread_name_filter else None
        self._every_n = int(every_n_steps)
        self._ranges = _parse_steps(steps)
        self._max_bytes = None if max_bytes is None else int(max_bytes)
        self._staging_dir = staging_dir
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._capture_mode = capture or os.environ.get("TFBLACKBOX_DUMP_CAPTURE") or "auto"
        if self._capture_mode not in native_capture.MODES:
            raise ValueError(f"capture={self._capture_mode!r}; expected one of "
                             f"{', '.join(native_capture.MODES)}")
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(
                keep_last, int) or keep_last < 0):
            raise ValueError(f"keep_last={keep_last!r}; expected a number of steps >= 0 "
                             f"(or None: every dumped step is written)")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"after={after!r}; expected a number of steps >= 0")
        if max_ring_bytes is not None and (isinstance(max_ring_bytes, bool) or not isinstance(
                max_ring_bytes, int) or max_ring_bytes <= 0):
            raise ValueError(f"max_ring_bytes={max_ring_bytes!r}; expected a number of bytes > 0")
        self.keep_last, self._after = keep_last, after
        self.max_ring_bytes = max_ring_bytes or blackbox.default_max_ring_bytes()
        self._triggers = blackbox.Triggers(persist_on) if keep_last is not None else None
        self._box = None
        self._fired: list = []        # every trigger fired, across sessions (hook.triggers)
        self._signals = None
        self._values = {}             # tag -> the recorder's copy of a scalar summary
        self._open: dict = {}         # thread slot -> its dumped run in progress
        self._run = self._finishing_with = None
        self._capture = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self.budget_exhausted = False
        self.dumped_steps = 0
        self.skipped_busy = 0
        self.capture = None           # "memory" or "files", known from begin()

    # -- which steps ---------------------------------------------------------------------------

    def wants(self, step):
        if step is None or step % self._every_n:
            return False
        if self._ranges is None:
            return True
        return any((lo is None or step >= lo) and (hi is None or step < hi)
                   for lo, hi in self._ranges)

    # -- hook ----------------------------------------------------------------------------------

    def begin(self):
        self._run = self._resolve_run()
        self._steps = StepTracker(tf)   # exact: the read is ordered before the increment
        self._graph = tf.compat.v1.get_default_graph()
        self._options_cache = {}
        self._default_watch = None
        self._last_fetches = None
        self._watch_reprs = {}
        self._last_step = None
        self._fetches = None
        if self._capture is None:
            native = native_capture.load(tf, self._capture_mode)
            self._capture = DumpCapture(self._run, self._staging_dir, self._max_pending, native)
            if self._triggers is not None:   # a new ring with each capture (each session)
                self._begin_blackbox()
        self.capture = "files" if self._capture.native is None else "memory"
        if self._finishing_with is not self._run:
            self._finishing_with = self._run
            self._run.add_finish_callback(lambda timeout=None: self._at_finish())

    def _resolve_run(self):
        store = self._store
        if store is None:
            return run_mod.get_or_start_run()
        if isinstance(store, run_mod.Run):
            return store
        active = run_mod.active_run()
        if active is not None and active.store.is_at(store):
            return active
        return run_mod.init(store=os.fspath(store))

    def after_create_session(self, session, coord):
        self._steps.start(session, self._run, "DumpHook")

    def before_run(self, run_context):
        if self._signals is not None:
            self._signals.raise_pending()   # SIGTERM's exit, if the handler's was lost
        fetches = self._fetches
        if fetches is None:   # made once a session: the same requests every run
            fetches = self._fetches = dict(self._steps.fetches())
            if self._values:
                fetches["values"] = list(self._values.values())
        try:
            options = self._prepare(run_context)
        except Exception as e:   # never take the training down
            log.error("tfblackbox: DumpHook could not prepare a dump (step not dumped): %s", e)
            self._local.batch, options = None, None
        return tf.compat.v1.train.SessionRunArgs(fetches, options=options)

    def after_run(self, run_context, run_values):
        batch, self._local.batch = getattr(self._local, "batch", None), None
        self._open.pop(self._slot(), None)
        try:
            results = run_values.results or {}
            step = self._steps.advance(results)
            if batch is not None:
                self._capture.take(self._slot(), batch)
                self._capture.seal(self._slot(), batch)
            self._last_step = step
            if self._values:
                self._check_values(step, results.get("values"))
        except Exception as e:   # never take the training down
            log.error("tfblackbox: DumpHook could not record a dumped step: %s", e)

    def end(self, session):
        self._seal_leftover()
        self._close()

    def _at_finish(self):
        """At the run's finish (also when a session.run raised, where MonitoredSession calls
        no hook's end()): dumped runs left open are sealed, everything queued is written."""
        for slot in list(self._open):
            self._seal_open(slot, self._open.pop(slot, None))
        self._close()

    def _close(self):
        if self._signals is not None:
            self._signals.uninstall()
            self._signals = None
        if self._capture is not None:
            capture, self._capture = self._capture, None
            capture.close()
            if capture.jobs.runs_dropped:
                log.warning("tfblackbox: DumpHook: %d dumped step(s) were dropped because the "
                            "writer queue was full", capture.jobs.runs_dropped)

    # -- internals -----------------------------------------------------------------------------

    def _slot(self):
        return threading.get_ident()

    def _seal_leftover(self):
        """A run that raised never reached after_run: its partial dumps are recorded as such."""
        batch, self._local.batch = getattr(self._local, "batch", None), None
        self._seal_open(self._slot(), batch)
        self._open.pop(self._slot(), None)

    def _seal_open(self, slot, batch):
        if batch is None or batch.status == "error" or self._capture is None:
            return
        batch.status = "error"
        self._capture.take(slot, batch)
        self._capture.seal(slot, batch)
        self._last_step = batch.step
        self._fire_exception(batch)

    def _prepare(self, run_context):
        self._seal_leftover()
        step = self._steps.next
        if not self.wants(step) or self.budget_exhausted:
            return None
        if self._thread_filter and not self._thread_filter.match(
                threading.current_thread().name or ""):
            return None
        cap = self._capture
        pending = cap.pending()
        if pending >= self._max_pending or (
                pending * max(cap.largest_seen, cap.jobs.largest_run) > self._max_pending_bytes):
            self.skipped_busy += 1
            if self.skipped_busy == 1 or self.skipped_busy % 100 == 0:
                log.warning("tfblackbox: DumpHook: %d dumped steps wait for ingestion; step %s "
                            "not dumped (%d skipped so far)", pending, step, self.skipped_busy)
            return None
        if self._max_bytes is not None and self._box is None and (
                cap.jobs.bytes_recorded + (pending + 1) * cap.jobs.largest_run > self._max_bytes):
            self.budget_exhausted = True
            log.warning("tfblackbox: DumpHook: disk budget max_bytes=%d reached (%d bytes of "
                        "dumps recorded in %d steps); no more dumps are recorded in this run. "
                        "Training goes on.", self._max_bytes, cap.jobs.bytes_recorded,
                        self.dumped_steps)
            return None
        args = run_context.original_args
        if self._watch_fn is None:
            watch = self._default_watch = self._default_watch or _watch_options()
        else:
            watch = self._watch_fn(args.fetches, args.feed_dict)
            if isinstance(watch, tuple):
                watch = _watch_options(*watch)
        slot = self._slot()
        path, reusable = cap.acquire(slot)
        try:
            key, options = self._run_options(watch, cap.tensor_url(slot), cap.url(slot))
            options.debug_options.global_step = step
            micros = int(time.time() * 1e6)
            n = next(_SESSION_RUNS)
            feed = args.feed_dict
            batch = Batch(step, micros / 1e6, layout.run_dir_name(micros, n), n,
                          self._fetches_repr(args.fetches),
                          repr(feed.keys()) if feed else repr(feed), (slot, key))
        except BaseException:
            cap.release(path)
            raise
        batch.path, batch.reused = path, (path if reusable else None)
        self._local.batch = self._open[slot] = batch
        self.dumped_steps += 1
        return options

    def _watch_key(self, watch):
        """repr(watch): the default WatchOptions' once (WatchOptions.__repr__ ~15 us a step)."""
        if watch is self._default_watch:
            text = self._watch_reprs.get(id(watch))
            if text is None:
                text = self._watch_reprs[id(watch)] = repr(watch)
            return text
        return repr(watch)

    def _fetches_repr(self, fetches):
        """repr(fetches), kept while the training loop passes the same fetches (a Tensor's
        repr costs ~10 us; most loops run the same list every step)."""
        key = (id(fetches), tuple(map(id, fetches)) if isinstance(fetches, (list, tuple))
               else None)
        last = self._last_fetches
        if last is not None and last[0] == key and last[1] is fetches:
            return last[2]
        text = repr(fetches)
        self._last_fetches = (key, fetches, text)
        return text

    def _run_options(self, watch, url, metadata_url):
        """(key, RunOptions) per watch config, URLs and graph version; only the step changes
        between runs (copying ~100 watches into new options cost ~0.1 ms a step). The URLs are
        per thread, so no two threads share one object."""
        key = (self._watch_key(watch), url, self._graph.version)
        cached = self._options_cache.get(key)
        if cached is None:
            from tensorflow.core.protobuf import config_pb2
            from tensorflow.python.debug.lib import debug_utils
            options = config_pb2.RunOptions()
            if watch.debug_ops and not (watch.node_name_regex_allowlist or
                                        watch.op_type_regex_allowlist or
                                        watch.tensor_dtype_regex_allowlist):
                # Without allowlists watch_graph adds the "*" watch next to one watch per
                # node with the same ops and URLs, which TF's DebugNodeInserter would apply
                # anyway: those only cost a copy (MonitoredSession merges hook options into
                # each run's), a serialization of ~100 protos a run and watch_graph's walk of
                # the graph (31 ms at 2 509 tensors). The "*" watch alone, by its own helper.
                debug_utils.add_debug_tensor_watch(
                    options, "*", output_slot=-1, debug_ops=watch.debug_ops, debug_urls=[url],
                    tolerate_debug_op_creation_failures=(
                        watch.tolerate_debug_op_creation_failures))
            else:
                debug_utils.watch_graph(
                    options, self._graph, debug_urls=[url], debug_ops=watch.debug_ops,
                    node_name_regex_allowlist=watch.node_name_regex_allowlist,
                    op_type_regex_allowlist=watch.op_type_regex_allowlist,
                    tensor_dtype_regex_allowlist=watch.tensor_dtype_regex_allowlist,
                    tolerate_debug_op_creation_failures=(
                        watch.tolerate_debug_op_creation_failures))
            watches = options.debug_options.debug_tensor_watch_opts
            # Always there: it carries the metadata URL, and TF applies "*" only when some
            # watch names a node
            meta = watches.add()
            meta.node_name, meta.output_slot = METADATA_WATCH, 0
            meta.debug_ops.append("DebugIdentity")
            meta.debug_urls.append(metadata_url)
            options.debug_options.reset_disk_byte_usage = True   # staging is emptied every run
            cached = self._options_cache[key] = (len(self._options_cache), options)
        return cached


def _watch_options(*args, **kwargs):
    from tensorflow.python.debug.wrappers.framework import WatchOptions
    return WatchOptions(*args, **kwargs)
