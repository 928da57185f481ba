"""Reading a run a window of steps at a time, and how far a live run can be read.

Every way out (the W&B and TensorBoard replays) reads a run in windows of about
`window_rows` rows, sized from the catalog's segment statistics, so its memory does not grow
with the run; and, of a run still recording, only the steps whose rows are all registered.
"""

import time

from .records import run_state

SETTLE_SECS = 5.0     # a flush registers its tables' segments within this many seconds


def step_windows(store, run_id, tables, window_rows, lo=None, hi=None):
    """Consecutive [a, b) step ranges covering lo <= step < hi where the run has rows in
    `tables`, each expected to hold about `window_rows` rows."""
    segs = [g for g in store.segments(run_id) if g.table in tables
            and g.min_step is not None and (lo is None or g.max_step >= lo)
            and (hi is None or g.min_step < hi)]
    if not segs:
        return []
    first = max(min(g.min_step for g in segs), lo if lo is not None else -2**62)
    end = min(max(g.max_step for g in segs) + 1, hi if hi is not None else 2**62)
    rows = sum(g.row_count for g in segs)
    span = max(g.max_step for g in segs) - min(g.min_step for g in segs) + 1
    width = max(1, int(window_rows * span / max(rows, 1)))
    return [(a, min(a + width, end)) for a in range(first, end, width)]


def settled_step(store, record, now=None):
    """The highest step whose rows are all registered, or None for no limit.

    A finished, failed or dead run is complete. A live writer registers one segment per table
    at each flush, and a flush holds whole steps; so every step up to the highest step of the
    segments registered at least SETTLE_SECS ago is complete. -1 when none has settled."""
    if run_state(record, now) != "running":
        return None
    cutoff = (now or time.time()) - SETTLE_SECS
    steps = [g.max_step for g in store.segments(record.run_id)
             if g.max_step is not None and g.created_at <= cutoff]
    return max(steps, default=-1)


def recorded_step(store, run_id):
    """The highest step of the run's registered segments (settled or not), or None."""
    return max((g.max_step for g in store.segments(run_id) if g.max_step is not None),
               default=None)
