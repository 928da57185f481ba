"""`Run.log`, `run.summary`, `run.config`, `define_metric`: wandb's logging API, recorded.

The step rule is wandb's (wandb_run.Run._log and its history handling): `run.step` is the step
of the row being built. `log(data)` adds to it and commits it, then moves to the next step;
`log(data, commit=False)` only adds; `log(data, step=s)` first commits the row being built when
s is higher and moves to s, and then only adds (the row is committed by a later step, a commit,
or `finish`). A step below `run.step` is one W&B would drop with a warning: the recorder warns
and records those values at that step, where the replay merges them into the row it pushes for
that step if that step was not pushed already. A hook that records a TF global step moves
`run.step` forward to it (`note_step`), as WandbHook's `wandb.log(step=global_step)` does.

Values are checked and converted on the caller's thread (values.py); a value that cannot be
kept is skipped with a warning that names its key, and the rest of the row is kept. Committed
rows, summary/config updates and define_metric calls go to the writer thread as jobs
(log_rows.py), in the order they were made.
"""

import collections.abc
import itertools
import json
import logging
import threading
import time

from . import log_rows
from . import wandb_values
from .values import FLOAT, SCALAR_KINDS, Unloggable, encode, json_value

log = logging.getLogger("tfblackbox")

HISTORY_TABLES = ("scalars", "histograms", "media", "tensors", "log_values", "wandb_objects")
SUMMARY_OPS = {"min", "max", "mean", "last", "copy", "none", "first"}   # wandb 0.31's


class RunLogging:
    """Mixed into Run: needs self.store, run_id, submit(job, nbytes), finished, record."""

    def _start_logging(self, console="auto"):
        self._log_lock = threading.RLock()
        self.step = start_step(self.store, self.run_id)
        self._floats = {}          # the row being built: its plain floats (the hot path)...
        self._row = {}             # ... and its other values, key -> (kind, payload)
        self._float_keys = set()   # keys last recorded as float \ for value_type events
        self._kinds = {}           # key -> int or bool, when last recorded as one /
        self._seq = itertools.count()
        self._outbox = log_rows.Outbox(self.submit, self._outbox_dropped)
        self._skipped = collections.Counter()   # reason -> values not recorded
        self._warned = collections.Counter()    # reason -> other warnings (backwards steps)
        self.summary = Summary(self)
        self._config = Config(self, self.record.config)
        self._console = None
        if console != "off":
            from .console import ConsoleCapture
            self._console = ConsoleCapture(self)
            self._console.start()

    @property
    def config(self):
        return self._config

    # -- log ------------------------------------------------------------------------------

    def log(self, data, step=None, commit=None):
        """wandb.log: records `data` ({name: value}) at the current step (see the module doc).
        Never raises: what cannot be recorded is named in a warning."""
        try:
            self._log(data, step, commit)
        except Exception as e:   # never take the training down
            log.error("tfblackbox: run %s: log() failed: %s (training goes on)", self.run_id, e)

    def _log(self, data, step, commit):
        if self.finished:
            self._skip("after finish", "log() after the run finished: not recorded")
            return
        if not isinstance(data, collections.abc.Mapping):
            self._skip("data", f"log(data): data must be a dict of {{name: value}}, got a "
                               f"{type(data).__name__}; nothing recorded")
            return
        step = self._check_step(step)
        wall = time.time()
        with self._log_lock:
            if step is not None and step < self.step:
                self._warn("backwards", f"log(step={step}): the step went backwards (the "
                           f"current step is {self.step}; W&B would drop these values); "
                           f"recorded at step {step}: {sorted(map(str, data))[:8]}")
                floats, row = {}, {}
                self._encode_into(floats, row, data)
                self._submit_row(step, wall, floats, row, backwards=True)
                return
            if step is not None and step > self.step:
                self._commit(wall)
                self.step = step
            self._encode_into(self._floats, self._row, data)
            if (step is None and commit is None) or commit:
                self._commit(wall)
                self.step += 1

    def _check_step(self, step):
        if step is None:
            return None
        try:
            ok = int(step) == step and not isinstance(step, bool) and int(step) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            self._warn("bad step", f"log(step={step!r}): a step must be a non-negative "
                                   f"integer; logged at the current step instead")
            return None
        return int(step)

    def _encode_into(self, floats, row, data):
        """Adds data to a row: plain floats to `floats`, the rest encoded to `row` (a later
        value of a key replaces an earlier one, whichever dict it is in)."""
        for key, value in data.items():
            if type(value) is float and type(key) is str and key.isascii():
                floats[key] = value
                if row and key in row:
                    del row[key]
                continue
            if not _valid_key(key):
                self._skip(f"key {key!r}", f"log(): the key {key!r} ({type(key).__name__}) is "
                                           f"not a string (of valid text); its value is not "
                                           f"recorded")
                continue
            try:
                encoded = wandb_values.encode(value) or encode(value)
            except Unloggable as e:
                self._skip(f"value {key}", f"log(): {key!r} is not recorded: it is {e}")
                continue
            if encoded[0] == FLOAT:
                floats[key] = encoded[1]
                row.pop(key, None)
            else:
                row[key] = encoded
                floats.pop(key, None)

    def _commit(self, wall):
        if self._floats or self._row:
            floats, row = self._floats, self._row
            self._floats, self._row = {}, {}
            self._submit_row(self.step, wall, floats, row)

    def _submit_row(self, step, wall, floats, row, backwards=False):
        """Sends a row to the writer, with value_type events for keys recorded for the first
        time in this attempt or with another kind than before (float, int, bool); a backwards
        row's kinds hold at its step only."""
        events = []
        if backwards:
            events = [(next(self._seq), "value_type_at", k, json.dumps(kind))
                      for k, kind in [(k, FLOAT) for k in floats] +
                      [(k, kv[0]) for k, kv in row.items() if kv[0] in SCALAR_KINDS]]
        else:
            known = self._float_keys
            if not known.issuperset(floats):
                for key in floats:
                    if key not in known:
                        known.add(key)
                        self._kinds.pop(key, None)
                        events.append((next(self._seq), "value_type", key, '"float"'))
            for key, (kind, _payload) in row.items():
                if kind in SCALAR_KINDS and self._kinds.get(key) != kind:
                    self._kinds[key] = kind
                    known.discard(key)
                    events.append((next(self._seq), "value_type", key, json.dumps(kind)))
        self._outbox.put(*log_rows.row_item(step, wall, floats, row, events))

    def note_step(self, step):
        """A hook recorded rows at this (TF global) step: later log() calls continue from it,
        as wandb.log(step=global_step) from WandbHook moves wandb's step."""
        if step < self.step:
            return   # the common case of a hook re-doing steps: no lock taken
        with self._log_lock:
            if step > self.step:
                self._commit(time.time())
                self.step = step

    # -- events: summary, config, define_metric, model ------------------------------------

    def _event(self, kind, tag, value_json):
        with self._log_lock:
            self._outbox.put(*log_rows.event_item(self.step, time.time(), next(self._seq),
                                                  kind, tag, value_json))

    def define_metric(self, name, step_metric=None, step_sync=None, hidden=None, summary=None,
                      overwrite=None):
        """wandb's define_metric, checked as wandb checks it, recorded, and issued again by
        the replay before the rows logged after it. Returns None (wandb returns a Metric)."""
        try:
            args = _define_metric_args(name, step_metric, step_sync, hidden, summary, overwrite)
        except ValueError as e:
            self._skip(f"define_metric {name!r}", f"define_metric: {e}; not recorded")
            return None
        self._event("define_metric", name, json.dumps(args, sort_keys=True))
        return None

    def record_model(self, name, info):
        """A Keras model's summary, JSON and parameter counts (tf2/metrics_logger.py)."""
        self._event("model", name, json.dumps(info))

    def _finish_logging(self):
        """At finish: the row being built is committed (as wandb.finish does), the console
        capture stops, and skipped values are summed up."""
        if getattr(self, "_log_lock", None) is None:
            return
        with self._log_lock:
            self._commit(time.time())
        if self._console is not None:
            self._console.stop()
        self._outbox.resend()
        if self._skipped:
            what = ", ".join(f"{n} x {reason}" for reason, n in self._skipped.most_common(10))
            log.warning("tfblackbox: run %s: %d logged item(s) were not recorded (%s); the "
                        "first of each kind was named in a warning", self.run_id,
                        sum(self._skipped.values()), what)

    def _flush_logging(self):
        """Before a flush: the console's partial lines out, and a drain for waiting rows."""
        if getattr(self, "_console", None) is not None:
            self._console.emit_partial()
        if getattr(self, "_outbox", None) is not None:
            self._outbox.resend()

    def _outbox_dropped(self, n):
        self._skipped["writer queue full"] += n
        log.warning("tfblackbox: run %s: the writer queue stayed full: %d logged rows and "
                    "events were dropped (on_full='drop')", self.run_id, n)

    def _skip(self, reason, message):
        """Counts a value that was not recorded; the first of each reason is a warning."""
        self._skipped[reason] += 1
        self._warn(reason, message, self._skipped[reason])

    def _warn(self, reason, message, n=None):
        """A warning, the first of each reason and every 1000th after it."""
        if n is None:
            self._warned[reason] += 1
            n = self._warned[reason]
        if n == 1 or n % 1000 == 0:
            log.warning("tfblackbox: run %s: %s%s", self.run_id, message,
                        f" ({n} times so far)" if n > 1 else "")


def _valid_key(key):
    """A str that can be stored (Arrow strings are UTF-8: no lone surrogates)."""
    if not isinstance(key, str):
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _define_metric_args(name, step_metric, step_sync, hidden, summary, overwrite):
    """The arguments as wandb 0.31's define_metric accepts them; ValueError otherwise."""
    if not _valid_key(name) or not name:
        raise ValueError(f"name {name!r}: expected a non-empty string")
    if "*" in (name[:-1] if name.endswith("*") else name):
        raise ValueError(f"name {name!r}: a '*' is allowed only at the end (a glob suffix)")
    step_metric = getattr(step_metric, "name", step_metric)   # a wandb Metric
    for arg, value, typ in (("step_metric", step_metric, str), ("step_sync", step_sync, bool),
                            ("hidden", hidden, bool), ("summary", summary, str),
                            ("overwrite", overwrite, bool)):
        if value is not None and not isinstance(value, typ):
            raise ValueError(f"{arg}={value!r}: expected a {typ.__name__}")
    if summary:
        bad = [op for op in summary.lower().split(",") if op not in SUMMARY_OPS]
        if bad:
            raise ValueError(f"summary {summary!r}: {bad[0]!r} is not one of "
                             f"{sorted(SUMMARY_OPS)}")
    given = dict(step_metric=step_metric, step_sync=step_sync, hidden=hidden, summary=summary,
                 overwrite=overwrite)
    return {k: v for k, v in given.items() if v is not None}


def start_step(store, run_id):
    """Where a run's step counter starts: after the highest step recorded in its history
    tables by earlier attempts (as W&B resumes a run after its last history step), else 0."""
    steps = [g.max_step for g in store.segments(run_id)
             if g.table in HISTORY_TABLES and g.max_step is not None]
    return max(steps) + 1 if steps else 0


class Summary(collections.abc.MutableMapping):
    """run.summary: values set here are recorded (summary events) and replayed at their place
    among the history rows, so a later logged value overrides them as it does in W&B."""

    def __init__(self, run):
        self._run = run
        self._data = {}

    def __getitem__(self, key):
        return self._data[key]

    def __setitem__(self, key, value):
        self.update({key: value})

    def __delitem__(self, key):
        del self._data[key]
        self._run._event("summary_remove", key, "null")

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def update(self, other=(), **kw):
        items = dict(other, **kw)
        for key, value in items.items():
            if not _valid_key(key):
                self._run._skip(f"summary key {key!r}", f"summary: the key {key!r} is not a "
                                                         f"string (of valid text); not recorded")
                continue
            try:
                text = json_value(value)
            except Unloggable as e:
                self._run._skip(f"summary {key}", f"summary[{key!r}] is not recorded: it is {e}")
                continue
            self._data[key] = value
            self._run._event("summary", key, text)

    def __repr__(self):
        return f"Summary({self._data!r})"


class Config(dict):
    """run.config: a dict whose updates are recorded (config events) and merged into the W&B
    run's config by the replay. Values W&B would turn into text are kept as text."""

    def __init__(self, run, initial):
        super().__init__(initial or {})
        self._run = run

    def __setitem__(self, key, value):
        self.update({key: value})

    def update(self, other=(), allow_val_change=None, **kw):
        items = dict(other if not hasattr(other, "as_dict") else other.as_dict(), **kw)
        for key, value in items.items():
            try:
                text = json_value(value)
            except Unloggable:
                text = json.dumps(str(value))   # wandb's config keeps str(value) as well
            super().__setitem__(key, json.loads(text))
            self._run._event("config", ascii(key)[1:-1] if not _valid_key(str(key)) else
                             str(key), text)

    def setdefaults(self, d):
        self.update({k: v for k, v in d.items() if k not in self})

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):   # config.lr = 0.1, as wandb.config allows
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self.update({name: value})

    def as_dict(self):
        return dict(self)


__all__ = ["RunLogging", "Summary", "Config", "start_step"]
