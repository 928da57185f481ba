"""Black-box mode of DumpHook: the last dumped steps kept in memory, written when a trigger fires.

    hook = recorder.DumpHook(keep_last=5, persist_on=("nan", "exception", "signal",
                                                      ("spike", "loss", 10.0)))

With `keep_last=K` each dumped step is captured as usual but goes to a ring in memory (this
module, on DumpCapture's ingest thread) instead of the store; the in-memory capture then
streams each tensor's content into memory of its own, apart from the records, and puts it in
only when a trigger writes the step (tfbb_hold/tfbb_fill in native/capture.cc). The ring
holds K+1 steps (the K before a trigger and the one it fires at) and at most `max_ring_bytes`
(default a tenth of the machine's RAM; the oldest steps leave first). When a trigger fires, the
ring's steps up to the trigger's, at most K+1 of them, are written as ordinary dumped steps,
and the next `after` dumped steps are written as they come; then the ring fills again. Nothing
is written unless a trigger fires, and a process killed with SIGKILL loses the ring.

Triggers (persist_on):
- "nan": a watched float tensor of the step holds NaN or +-Inf (checked in C++ as TF hands
  each tensor over; with capture="files", with numpy on the ingest thread);
- "exception": a session.run raised (its partial dumps are the trigger's step, status 'error');
- "signal": SIGTERM (preemption; the process then exits as it would have, or the handler that
  was there runs) or SIGUSR1 (an operator's snapshot; training goes on);
- ("spike", tag, factor): the scalar summary `tag` (tf.compat.v1.summary.scalar) is above
  factor x the median of its last 100 values (or not finite);
- a callable (step, summary_values) -> bool, with the graph's scalar summaries of the step.
Each firing is recorded in the catalog (`tfblackbox show` lists them).
"""

import collections
import logging
import math
import os
import signal
import statistics
import threading
import time

import numpy as np

from tfblackbox.schema.codecs.tfdbg_v1_codec import content_span

log = logging.getLogger("tfblackbox")

NAMED = ("nan", "exception", "signal")
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
SPIKE_WINDOW = 100      # values of the tag the running median is taken over
SPIKE_MIN_VALUES = 5    # before that many, no median to compare with
OBJECT_BYTES = 256      # a captured tensor's Python objects, beside its bytes


def default_max_ring_bytes():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 10
    except (ValueError, OSError):
        return 1 << 30


class Triggers:
    """persist_on, checked: which named triggers, spike rules and callables."""

    def __init__(self, persist_on):
        if isinstance(persist_on, (str, tuple)) and (
                isinstance(persist_on, str) or persist_on[:1] == ("spike",)):
            persist_on = [persist_on]
        self.named, self.spikes, self.callables = set(), [], []
        for item in persist_on or ():
            if isinstance(item, str):
                if item not in NAMED:
                    raise ValueError(f"persist_on: {item!r} is not a trigger; expected "
                                     f"{', '.join(map(repr, NAMED))}, ('spike', tag, factor) "
                                     f"or a callable (step, summary_values) -> bool")
                self.named.add(item)
            elif callable(item):
                self.callables.append(item)
            elif (isinstance(item, (tuple, list)) and len(item) == 3 and item[0] == "spike"
                  and isinstance(item[1], str) and isinstance(item[2], (int, float))
                  and not isinstance(item[2], bool) and item[2] > 0):
                self.spikes.append(SpikeRule(item[1], float(item[2])))
            else:
                raise ValueError(f"persist_on: {item!r}; expected a trigger name, ('spike', "
                                 f"tag, factor > 0) or a callable (step, summary_values) -> bool")

    def wants_values(self):
        return bool(self.spikes or self.callables)

    def check_values(self, step, values):
        """The first (kind, reason) that the step's scalar summary values fire, or None."""
        for rule in self.spikes:
            reason = rule.observe(values.get(rule.tag))
            if reason:
                return "spike", f"{reason} at step {step}"
        for fn in self.callables:
            try:
                if fn(step, dict(values)):
                    name = getattr(fn, "__qualname__", None) or repr(fn)
                    return "callable", f"{name} returned true at step {step}"
            except Exception as e:   # the user's rule: reported, never fatal
                log.error("tfblackbox: DumpHook: persist_on callable %r raised at step %s: "
                          "%s: %s", fn, step, type(e).__name__, e)
        return None


class SpikeRule:
    def __init__(self, tag, factor):
        self.tag, self.factor = tag, factor
        self.values = collections.deque(maxlen=SPIKE_WINDOW)

    def observe(self, value):
        if value is None:
            return None
        value = float(value)
        if not math.isfinite(value):
            return f"{self.tag!r} is {value}"
        reason = None
        if len(self.values) >= SPIKE_MIN_VALUES:
            median = statistics.median(self.values)
            if abs(value) > self.factor * abs(median):
                reason = (f"{self.tag!r} = {value:.6g}, above {self.factor:g} x its running "
                          f"median {median:.6g}")
        self.values.append(value)
        return reason


# -- the NaN check -----------------------------------------------------------------------------

def _float_types():
    kinds = {"float16": np.float16, "float32": np.float32, "float64": np.float64,
             "complex64": np.float32, "complex128": np.float64,
             "float16_ref": np.float16, "float32_ref": np.float32, "float64_ref": np.float64}
    try:
        import ml_dtypes   # TensorFlow's own dependency
        kinds["bfloat16"] = kinds["bfloat16_ref"] = ml_dtypes.bfloat16
    except ImportError:
        pass
    return kinds


FLOATS = _float_types()


def nonfinite(tensor):
    """True when a captured dump (layout.TensorFile) of a float dtype holds NaN or +-Inf. A
    float64 sum is finite exactly when every element is (it cannot overflow for float32 and
    narrower), so most tensors cost one vectorised pass; float64 sums that overflow are
    checked element by element."""
    dtype = tensor.dtype
    if dtype is None:
        from tfblackbox.schema.formats import tfdbg_v1
        dtype = tensor.dtype = tfdbg_v1.tensor_info(tensor.data)[0]
    np_type = FLOATS.get(dtype)
    if np_type is None:
        return False
    start, end = tensor.content or content_span(tensor.data) or (0, 0)
    if end <= start:
        return _nonfinite_values(tensor.data)
    a = np.frombuffer(tensor.data, np_type, (end - start) // np.dtype(np_type).itemsize, start)
    if math.isfinite(a.sum(dtype=np.float64)):
        return False
    return not bool(np.isfinite(a).all())


def _nonfinite_values(event):
    """Tensors without tensor_content (TF writes scalars of some kinds as *_val): parsed."""
    from tfblackbox.schema.formats import tensor_proto
    from tfblackbox.schema.formats.wire import span
    at = span(event, 0, len(event), 5)
    at = at and span(event, at[0], at[1], 1)
    at = at and span(event, at[0], at[1], 8)
    if not at:
        return False
    values = tensor_proto.to_ndarray(event, at[0], at[1])
    return values.size > 0 and not bool(np.isfinite(values).all())


def first_nonfinite(tensors):
    """The earliest dumped (by timestamp) DebugIdentity tensor holding NaN or +-Inf, or None
    (other debug ops' outputs are summaries, not the tensor)."""
    bad = [t for t in tensors if t.debug_op == "DebugIdentity" and nonfinite(t)]
    return min(bad, key=lambda t: (t.timestamp, t.ext_timestamp)) if bad else None


# -- the ring and its persisting (DumpCapture's ingest thread) -----------------------------------

def completed(entry):
    """An ingested step with its tensors and run row (the ring keeps them unparsed)."""
    complete = entry.pop("complete", None)
    return complete() if complete is not None else entry


class Fire:
    def __init__(self, upto, step, kind, reason):
        self.upto, self.step, self.kind, self.reason = upto, step, kind, reason
        self.fired_at = time.time()


class BlackBox:
    """The ring of dumped steps between triggers; `record(entries)` writes some as usual."""

    def __init__(self, keep_last, max_ring_bytes, after, triggers, record, note_trigger,
                 fired):
        self.keep_last, self.max_bytes, self.after = keep_last, max_ring_bytes, after
        self.triggers = triggers
        self._record, self._note = record, note_trigger
        self._ring = collections.deque()      # (seq, read entry, bytes), oldest first
        self.ring_bytes = self.peak_bytes = 0
        self.evicted_for_bytes = 0
        self._through = 0                     # entries up to this seq are written as they come
        self._fires = []                      # waiting for their step to be ingested
        self._lock = threading.RLock()        # a signal handler may fire on a thread holding it
        self.ingested = 0                     # seq of the last entry taken
        self.fired = fired                    # every Fire, in order (hook.triggers)
        self.steps_written = 0

    def fire(self, upto, step, kind, reason):
        """Any thread: persist the ring up to the entry `upto` (a seal number) once ingested."""
        with self._lock:
            self._fires.append(Fire(upto, step, kind, reason))

    def due(self):
        with self._lock:
            return any(f.upto <= self.ingested for f in self._fires)

    def waiting(self):
        """Whether a trigger waits (for steps ingested or still queued)."""
        with self._lock:
            return bool(self._fires)

    def take(self, entries):
        """The ingest's entries of one pass, in seal order."""
        for e in entries:
            # the in-memory capture counted them as TF wrote them; files are checked here
            if ("nan" in self.triggers.named and e["seq"] > self._through
                    and e.get("nonfinite") != 0):
                bad = first_nonfinite(completed(e)["tensors"])
                if bad is not None:
                    self.fire(e["seq"], e["step"], "nan",
                              f"NaN or Inf in {bad.node_name}:{bad.output_slot} "
                              f"({bad.debug_op}) at step {e['step']}")
                elif e.get("nonfinite"):   # counted as TF wrote them; their values are gone
                    self.fire(e["seq"], e["step"], "nan",
                              f"NaN or Inf in {e['nonfinite']} tensor(s) at step {e['step']} "
                              f"(their values could not be read back)")
            if e["seq"] <= self._through:
                self._write([completed(e)], None)
            else:
                with self._lock:
                    pinned = any(f.upto == e["seq"] for f in self._fires)
                self._keep(e, pinned)
            self.ingested = e["seq"]
            self.settle()

    def _keep(self, e, pinned):
        """Into the ring; the oldest steps leave for the bounds (a step a trigger waits for
        stays, even alone above max_ring_bytes)."""
        nbytes = e.get("ring_bytes")
        if nbytes is None:
            nbytes = sum(len(t.data) + OBJECT_BYTES for t in e["tensors"]) + len(
                e["run_row"].get("core_metadata") or b"")
        self._ring.append((e["seq"], e, nbytes))
        self.ring_bytes += nbytes
        while len(self._ring) > self.keep_last + 1 or (
                self.ring_bytes > self.max_bytes and len(self._ring) > 1):
            if len(self._ring) <= self.keep_last + 1:
                self.evicted_for_bytes += 1
            self._drop_oldest()
        if self.ring_bytes > self.max_bytes and not pinned:   # one step alone is too large
            self._drop_oldest()
            self.evicted_for_bytes += 1
            if self.evicted_for_bytes == 1:
                log.warning("tfblackbox: DumpHook: dumped step %s (%d bytes) is larger than "
                            "max_ring_bytes=%d; it is not kept", e["step"], nbytes,
                            self.max_bytes)
        self.peak_bytes = max(self.peak_bytes, self.ring_bytes)

    def _drop_oldest(self):
        _seq, e, nbytes = self._ring.popleft()
        self.ring_bytes -= nbytes
        # the entry and its `complete` closure refer to each other: broken here, so a dropped
        # step is freed at once and not left to the cycle collector (whose full passes, with
        # a step's garbage every few ms, cost ~0.3 s of a 4 000-step ring run at 24 tensors)
        e.pop("complete", None)
        records = e.pop("records", None)
        if records is not None:    # never written: its captured buffer goes back now
            records.release()

    def settle(self, final=False):
        """Writes what the fires whose step is in (or, at the end, everything) ask for."""
        while True:
            with self._lock:
                ready = [f for f in self._fires if final or f.upto <= self.ingested]
                if not ready:
                    return
                fire = ready[0]
                self._fires.remove(fire)
            self._persist(fire)

    def _persist(self, fire):
        upto = min(fire.upto, self.ingested)
        before = [r for r in self._ring if r[0] <= upto][-(self.keep_last + 1):]
        self._through = max(self._through, fire.upto + self.after)
        later = [r for r in self._ring if upto < r[0] <= self._through]
        chosen = before + later
        for _seq, e, _n in chosen:     # parsed now, before their buffers leave the ring
            try:
                completed(e)
            except Exception as err:   # never take the training down
                log.error("tfblackbox: DumpHook could not read the dumped step %s of the ring: "
                          "%s", e["step"], err)
        chosen = [r for r in chosen if "run_row" in r[1]]
        while self._ring and self._ring[0][0] <= max(upto, self._through):
            self._drop_oldest()
        written = self._write([r[1] for r in chosen], fire)
        steps = [r[1]["step"] for r in chosen] if written else []
        self.fired.append(fire)
        log.warning("tfblackbox: DumpHook: trigger %s: %s; %d dumped step(s) written%s",
                    fire.kind, fire.reason, len(steps),
                    f" ({steps[0]}..{steps[-1]})" if steps else "")
        try:
            self._note(fire, steps)
        except Exception as e:   # the steps are written; only the catalog note is missing
            log.error("tfblackbox: DumpHook: could not record trigger %s in the catalog: %s",
                      fire.kind, e)

    def _write(self, entries, fire):
        if not entries:
            return True
        try:
            ok = self._record(entries)
        except Exception as e:   # never take the training down
            log.error("tfblackbox: DumpHook could not write the dumped steps of a trigger "
                      "(%s): %s", fire.kind if fire else "after a trigger", e)
            return False
        if ok:
            self.steps_written += len(entries)
        return ok


# -- signals ------------------------------------------------------------------------------------

class SignalTrap:
    """SIGTERM and SIGUSR1 fire the trigger; then SIGTERM does what it did before: the handler
    that was installed runs, or (default action) the process exits with 128+15 through
    SystemExit, so the run is finished and the ring written on the way out."""

    def __init__(self, on_signal, on_exit):
        self._on_signal, self._on_exit = on_signal, on_exit
        self._previous = {}
        self.exit_code = None   # set once SIGTERM's default exit was raised

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            log.warning("tfblackbox: DumpHook: persist_on 'signal' needs the hook to begin on "
                        "the main thread; no signal trigger")
            return False
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return True

    def uninstall(self):
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum, frame):
        try:
            self._on_signal(signal.Signals(signum).name)
        except Exception as e:   # never take the training down
            log.error("tfblackbox: DumpHook: signal trigger failed: %s", e)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL and signum == signal.SIGTERM:
            self._on_exit(128 + signum)
            self.exit_code = 128 + signum
            raise SystemExit(128 + signum)

    def raise_pending(self):
        """Raises the exit again if the handler's was lost. Python runs a handler in whatever
        the main thread executes next; inside a __del__ or a weakref callback a SystemExit is
        only printed ("Exception ignored in"), and training went on (seen once in CI: the
        trigger written, the process still training 13 minutes later)."""
        if self.exit_code is not None:
            raise SystemExit(self.exit_code)


def summary_scalars(tf, graph):
    """{tag: fetchable copy} of the graph's scalar summaries (ScalarSummary ops with a constant
    tag), for the spike and callable triggers. The copies live in the recorder's own scope, so
    fetching them leaves the dumps' fetch list as the user's."""
    found = {}
    for op in graph.get_operations():
        if op.type != "ScalarSummary" or len(op.inputs) != 2:
            continue
        tag = tf.get_static_value(op.inputs[0])
        if tag is None or getattr(tag, "ndim", 0) != 0:
            continue
        tag = tag.item() if hasattr(tag, "item") else tag
        found[tag.decode("utf-8", "replace") if isinstance(tag, bytes) else str(tag)] = (
            op.inputs[1])
    if not found or graph.finalized:
        return {}
    with graph.as_default(), tf.control_dependencies(None), tf.name_scope("tfblackbox/"):
        return {tag: tf.identity(value, name="trigger_value") for tag, value in found.items()}
