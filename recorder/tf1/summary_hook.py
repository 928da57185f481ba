"""SummaryHook: a drop-in for wandb's WandbHook that records into the store.

Same signature and step rule as WandbHook (log when global_step % steps_per_log == 0), but the
summary op is requested only on steps that will be logged, as SummarySaverHook does. Rows carry
the global step at which the session.run began (the step the train op was applied at), read
exactly (global_step.py); SummarySaverHook labels the same summary with that value + 1.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import tensorflow as tf

from .. import run as run_mod
from .global_step import StepTracker
from tfblackbox.schema.codecs.summary_decode import decode_summary

log = logging.getLogger("tfblackbox")


class SummaryHook(tf.compat.v1.train.SessionRunHook):
    def __init__(self, summary_op: Any = None, steps_per_log: int = 1000,
                 history: Any = None) -> None:
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
        self._steps = StepTracker(tf)
        self._last_logged = None
        self._args = None

    def after_create_session(self, session, coord):
        self._steps.start(session, self._run, "SummaryHook")

    def _wants(self, step):
        return (self._summary_op is not None and step is not None and
                step % self._steps_per_log == 0 and step != self._last_logged)

    # Fetches are a bare tensor or a list, not a dict: MonitoredSession maps every hook's
    # fetches on every run, and a dict costs TF's Python ~5 us a step more (tools/bench_hooks'
    # every-100 case fetches only the step on 99 runs of 100, as SummarySaverHook does).
    def before_run(self, run_context):
        args = self._args
        if args is None:   # made once: the same two requests every run
            step = self._steps.fetches().get("step")
            args = self._args = (
                tf.compat.v1.train.SessionRunArgs(
                    [self._summary_op] if step is None else [step, self._summary_op]),
                None if step is None else tf.compat.v1.train.SessionRunArgs(step))
        return args[0] if self._wants(self._steps.next) else args[1]

    def after_run(self, run_context, run_values):
        try:
            self._record(self._results(run_values.results))
        except Exception as e:   # never take the training down
            log.error("tfblackbox: SummaryHook could not record a step: %s", e)

    def _results(self, fetched):
        """before_run's fetches as {"step": ..., "summary": ...} (either may be missing)."""
        if fetched is None:
            return {}
        if isinstance(fetched, list):
            if len(fetched) == 1:
                return {"summary": fetched[0]}
            return {"step": fetched[0], "summary": fetched[1]}
        return {"step": fetched}

    def _record(self, results):
        wall = time.time()
        step = self._steps.advance(results)
        summary = results.get("summary")
        if summary is None:
            return
        step = self._steps.confirm(step)
        if not self._wants(step):
            return   # the step was not the predicted one: not a logging step after all
        self._last_logged = step
        self._run.note_step(step)   # later log() calls go on from here, as after WandbHook's
        for serialized in summary if isinstance(summary, (list, tuple)) else [summary]:
            self._run.submit(functools.partial(decode_summary, serialized, step, wall),
                             len(serialized))
