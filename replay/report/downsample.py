"""Long series made short enough for a page: min and max per bucket of steps.

The step range is cut into `buckets` equal spans (pixel columns of a chart); each span keeps
the points holding its smallest and its largest value, in step order (one point when they are
the same). So spikes and dips survive, unlike with every-n-th sampling, and a run of any
length gives at most 2 * buckets points. Non-finite values (NaN, +-inf) cannot be drawn and
are counted apart.
"""

import numpy as np

BUCKETS = 1000


def minmax(steps, values, buckets=BUCKETS):
    """(steps, values) kept, as numpy arrays; finite values only."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        steps, values = steps[finite], values[finite]
    n = len(steps)
    if n <= 2 * buckets:
        return steps, values
    lo, hi = int(steps[0]), int(steps[-1])
    span = hi - lo + 1
    bucket = (steps - lo) * buckets // span        # non-decreasing: steps are sorted
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    sizes = np.diff(np.r_[starts, n])
    keep = np.concatenate([_first(values == np.repeat(np.minimum.reduceat(values, starts),
                                                      sizes), bucket, last=False),
                           _first(values == np.repeat(np.maximum.reduceat(values, starts),
                                                      sizes), bucket, last=True)])
    keep = np.unique(keep)                          # sorted: step order
    return steps[keep], values[keep]


def _first(hits, bucket, last):
    """Per bucket, the first (or last) index where `hits` holds."""
    idx = np.flatnonzero(hits)
    b = bucket[idx]
    edge = np.r_[b[1:] != b[:-1], True] if last else np.r_[True, b[1:] != b[:-1]]
    return idx[edge]
