"""DumpHook's black-box mode, the hook's side: building the ring, firing triggers (see
blackbox.py for the ring itself and what each trigger means)."""

import logging
import re
import weakref

import tensorflow as tf

from . import blackbox
from .. import run as run_mod

log = logging.getLogger("tfblackbox")
FLUSH_TIMEOUT = 120.0   # seconds a trigger waits for its steps to reach the store
# graph -> {tag: the recorder's copy of its value}
_VALUES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class BlackBoxHook:
    """Mixed into DumpHook: needs its _capture, _run, _graph, _triggers, keep_last, ..."""

    def _begin_blackbox(self):
        cap = self._capture

        def record(entries):   # the disk budget counts what is written, not the ring
            nbytes = sum(e["nbytes"] for e in entries)
            if self._max_bytes is not None and cap.jobs.bytes_recorded + nbytes > self._max_bytes:
                self.budget_exhausted = True
                log.warning("tfblackbox: DumpHook: disk budget max_bytes=%d reached (%d bytes "
                            "of dumps recorded); %d dumped step(s) of a trigger not written",
                            self._max_bytes, cap.jobs.bytes_recorded, len(entries))
                return False
            return cap.jobs.record(entries)
        self._box = cap.blackbox = blackbox.BlackBox(
            self.keep_last, self.max_ring_bytes, self._after, self._triggers, record,
            self._note_trigger, self._fired)
        if self._triggers.wants_values():
            self._values = _VALUES.get(self._graph)
            if self._values is None:   # once per graph: a later session's graph is final
                self._values = _VALUES[self._graph] = blackbox.summary_scalars(tf, self._graph)
            missing = [r.tag for r in self._triggers.spikes if r.tag not in self._values]
            if missing:
                log.error("tfblackbox: DumpHook: persist_on spike tag(s) %s: no scalar summary "
                          "with that tag in the graph (found: %s); those spikes never fire",
                          ", ".join(map(repr, missing)), ", ".join(map(repr, self._values))
                          or "none")
        if "signal" in self._triggers.named:
            self._signals = blackbox.SignalTrap(self._on_signal, run_mod.note_exit_code)
            self._signals.install()

    @property
    def triggers(self):
        """The triggers fired so far: (step, kind, reason)."""
        return [(f.step, f.kind, f.reason) for f in self._fired]

    @property
    def ring_bytes(self):
        return self._box.ring_bytes if self._box else 0

    @property
    def ring_peak_bytes(self):
        return self._box.peak_bytes if self._box else 0

    def _fire(self, step, kind, reason, upto=None):
        cap = self._capture
        if self._box is None or cap is None:
            return
        self._box.fire(cap.sealed if upto is None else upto, step, kind, reason)
        cap.wake()

    def _on_signal(self, name):
        self._signalled = True
        self._fire(self._last_step, "signal", f"{name} received after step {self._last_step}")

    def _check_values(self, step, fetched):
        if step is None or not fetched:
            return
        values = {tag: float(v) for tag, v in zip(self._values, fetched)}
        hit = self._triggers.check_values(step, values)
        if hit:
            self._fire(step, *hit)

    def _note_trigger(self, fire, steps):
        """Records the firing once its steps are in registered segments, so a trigger in the
        catalog always has its steps in the store, whenever the process is killed."""
        reason = fire.reason
        system = getattr(self._run, "system", None)
        if system is not None:   # the machine's state with it, flushed with its steps
            system.sample_now(f"trigger {fire.kind} at step {fire.step}")
        if steps:
            try:
                self._run.writer.flush(FLUSH_TIMEOUT)
            except Exception as e:   # kept in memory and retried by the writer; said so
                reason += f" (its steps were not yet on disk when recorded: {e})"
        self._run.store.record_trigger(
            self._run.run_id, self._run.writer_id, fire.kind, reason, step=fire.step,
            fired_at=fire.fired_at, first_step=steps[0] if steps else None,
            last_step=steps[-1] if steps else None, steps_written=len(steps))

    def _fire_exception(self, batch):
        """A session.run that raised (its partial dumps just sealed as `batch`)."""
        if self._triggers is None or "exception" not in self._triggers.named:
            return
        error = run_mod.exit_error(self._run)
        # the way out of a signal, which fired itself (the exit's error may not be known yet
        # when the interrupted step is sealed)
        if getattr(self, "_signalled", False) or isinstance(error, SystemExit):
            return
        what = describe(error) if error is not None else "an exception or an interruption"
        self._fire(batch.step, "exception",
                   f"session.run at step {batch.step} did not return: {what}", upto=batch.seq)


_NOISE = re.compile(r"(File |\[\[|Graph execution error|Detected at node|Node: |$)")


def describe(error):
    """One line for an exception; TF's graph errors without their stack traces."""
    text = str(error).split("Original stack trace")[0]
    node = re.search(r"Node: '([^']+)'", text)
    lines = [ln.strip() for ln in text.splitlines() if not _NOISE.match(ln.strip())]
    where = f" at node {node.group(1)!r}" if node else ""
    return f"{type(error).__name__}{where}: {' '.join(lines)}"[:500]
