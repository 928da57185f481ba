"""The catalog's record of black-box triggers: DumpHook's ring mode keeps the last dumped steps
in memory and writes them when a trigger fires; each firing is one `triggers` row (format 4).

These are bound as methods of Store (`store.record_trigger(...)`), so `self` is a Store.
"""

import numbers
import time

from . import catalog as cat
from ..errors import RunNotFoundError
from .records import trigger_record

TRIGGER_KINDS = ("nan", "exception", "signal", "spike", "callable")


def record_trigger(self, run_id, writer_id, kind, reason, step=None, fired_at=None,
                   first_step=None, last_step=None, steps_written=0):
    """Records one trigger that fired in run `run_id` (recorded by attempt `writer_id`, or
    None); returns its trigger_id. `fired_at` defaults to now; first_step..last_step and
    steps_written say which dumped steps it wrote (none: None, None, 0)."""
    step, first_step, last_step, steps_written = _check(kind, reason, step, first_step,
                                                        last_step, steps_written)
    fired_at = time.time() if fired_at is None else float(fired_at)
    values = dict(run_id=run_id, writer_id=writer_id, step=step, kind=kind, reason=reason,
                  fired_at=fired_at, first_step=first_step, last_step=last_step,
                  steps_written=steps_written)

    def add(s):
        if s.info.get("retry"):   # a commit whose answer was lost: that row is ours
            row = s.scalar(cat.select(cat.TriggerRow).where(
                *[getattr(cat.TriggerRow, k) == v if v is not None
                  else getattr(cat.TriggerRow, k).is_(None) for k, v in values.items()]))
            if row is not None:
                return row.trigger_id
        if s.get(cat.RunRow, run_id) is None:
            raise RunNotFoundError(f"run {run_id!r} is not in store {self.root}: cannot record "
                                   f"its {kind} trigger")
        if writer_id is not None:
            w = s.get(cat.WriterRow, writer_id)
            if w is None or w.run_id != run_id:
                raise ValueError(f"writer_id {writer_id!r} is not an attempt of run {run_id!r} "
                                 f"in store {self.root}"
                                 + (f" (it is one of run {w.run_id!r})" if w else ""))
        row = cat.TriggerRow(**values)
        s.add(row)
        s.flush()
        return row.trigger_id
    return self.catalog.transact(add)


def triggers(self, run_id):
    """The run's triggers (TriggerRecord) in the order they were recorded; [] if none."""
    def read(s):
        q = cat.select(cat.TriggerRow).where(cat.TriggerRow.run_id == run_id).order_by(
            cat.TriggerRow.trigger_id)
        return [trigger_record(r) for r in s.scalars(q)]
    return self.catalog.read(read)


def _check(kind, reason, step, first_step, last_step, steps_written):
    """The steps and count as ints (a session's global step comes as numpy.int64)."""
    if kind not in TRIGGER_KINDS:
        raise ValueError(f"trigger kind {kind!r} is unknown; expected one of "
                         f"{', '.join(TRIGGER_KINDS)}")
    if not isinstance(reason, str):
        raise ValueError(f"trigger reason {reason!r} is not a string")
    ints = []
    for name, value in (("step", step), ("first_step", first_step), ("last_step", last_step),
                        ("steps_written", steps_written)):
        if value is not None and (isinstance(value, bool) or
                                  not isinstance(value, numbers.Integral)):
            raise ValueError(f"trigger {name}={value!r} is not an integer")
        ints.append(None if value is None else int(value))
    step, first_step, last_step, steps_written = ints
    if steps_written is None or steps_written < 0:
        raise ValueError(f"trigger steps_written={steps_written!r}; expected a count >= 0")
    if first_step is not None and last_step is not None and first_step > last_step:
        raise ValueError(f"trigger first_step={first_step} is after last_step={last_step}")
    return step, first_step, last_step, steps_written
