"""SummaryHook: a drop-in for wandb's WandbHook that records into the store.

Same signature and step rule as WandbHook (log when global_step % steps_per_log == 0), but the
summary op is requested only on steps that will be logged, as SummarySaverHook does. Rows carry
the global step at which the session.run began (the step the train op was applied at);
SummarySaverHook labels the same summary with the step after the run, that value + 1.
"""

import functools
import logging
import time

import tensorflow as tf

from . import run as run_mod
from .summaries import decode_summary

log = logging.getLogger("tfblackbox")


class SummaryHook(tf.compat.v1.train.SessionRunHook):
    def __init__(self, summary_op=None, steps_per_log=1000, history=None):
        if int(steps_per_log) < 1:
            raise ValueError(f"steps_per_log={steps_per_log!r}; expected a positive integer")
        self._summary_op = summary_op
        self._steps_per_log = int(steps_per_log)
        self._history = history        # a Run to record into; default: the active run
        self._run = None

    def begin(self):
        self._run = self._history if self._history is not None else run_mod.get_or_start_run()
        if self._summary_op is None:
            self._summary_op = tf.compat.v1.summary.merge_all()
        if self._summary_op is None:
            log.warning("tfblackbox: SummaryHook found no summaries in the graph; it records "
                        "nothing")
        from tensorflow.python.training import training_util
        if tf.compat.v1.train.get_global_step() is not None:
            self._step_tensor = training_util._get_or_create_global_step_read()
        else:
            self._step_tensor = None   # no global step: count session.run calls, as WandbHook did
        self._next_step = 0 if self._step_tensor is None else None
        self._read_step = None
        self._last_logged = None

    def after_create_session(self, session, coord):
        if self._step_tensor is None:
            return
        try:
            # a callable on the raw session reads the step in ~35 us; session.run takes ~200 us
            self._read_step = session.make_callable(self._step_tensor)
            self._next_step = int(self._read_step())
            self._run.note_start_step(self._next_step)
        except Exception as e:   # never take the training down
            log.error("tfblackbox: SummaryHook could not read the global step: %s", e)

    def _wants(self, step):
        return (self._summary_op is not None and step is not None and
                step % self._steps_per_log == 0 and step != self._last_logged)

    def before_run(self, run_context):
        if self._wants(self._next_step):   # the step is read exactly after this run
            return tf.compat.v1.train.SessionRunArgs({"summary": self._summary_op})
        if self._step_tensor is not None:   # a cheap read to follow the step between logs
            return tf.compat.v1.train.SessionRunArgs({"step": self._step_tensor})
        return None

    def after_run(self, run_context, run_values):
        try:
            self._record(run_context, run_values.results or {})
        except Exception as e:   # never take the training down
            log.error("tfblackbox: SummaryHook could not record a step: %s", e)

    def _record(self, run_context, results):
        wall = time.time()
        step = self._next_step
        summary = results.get("summary")
        if self._step_tensor is None:
            self._next_step = step + 1
        elif summary is not None:
            # The read fetched with the train op races with its increment, so on logging steps
            # we read the global step again after the run (as SummarySaverHook does).
            read = self._read_step or (lambda: run_context.session.run(self._step_tensor))
            after = int(read())
            if step is None or after != step + 1:
                step = after - 1          # moved by other than +1 (another worker?): best guess
            self._next_step = after
        else:
            seen = int(results["step"])
            if step is None or seen not in (step, step + 1):
                self._next_step = seen    # out of step with our count: follow the graph
            else:
                self._next_step = step + 1
        if summary is None or not self._wants(step):
            return
        self._last_logged = step
        for serialized in summary if isinstance(summary, (list, tuple)) else [summary]:
            self._run.submit(functools.partial(decode_summary, serialized, step, wall),
                             len(serialized))
