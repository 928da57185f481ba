"""A histogram's left edges stored once (store format 8).

A TF2 histogram (a plugin tensor of [left, right, count] rows) has each bucket's left edge equal
to the right edge of the bucket before it, so `bucket_lefts` repeated `bucket_limits` but for
its first value: a third of a histogram row's bytes. On tools/bench_tensorboard's 15.7 MB
logdir (18 000 histograms) the segment went from 2.79 to 1.52 MB and its encoding from 44 to
24 ms, plus 7-8 ms to cut the lists (8 ms to put them back on a read). Segments now
keep such a row's `bucket_lefts` as its first edge alone, and Store.read gives the whole list
back. Only a row whose left edges equal the right edges before them bit for bit (NaN and -0.0
included) is cut, so the expansion restores every bit; any other row is stored whole. A row
whose `bucket_lefts` has fewer values than `bucket_limits` is one cut this way: a whole list has
one value a bucket.
"""

import numpy as np
import pyarrow as pa

TABLE = "histograms"


def _lists(column):
    """(offsets, bit patterns of the values, validity) of a list<double> column."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = arr.offsets.to_numpy()
    values = arr.values[offsets[0]:offsets[-1]].to_numpy(zero_copy_only=False).view(np.int64)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    return offsets - offsets[0], values, valid


def _runs(starts, lengths):
    """Positions start..start+length of each row, end to end."""
    total = int(lengths.sum())
    firsts = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return firsts + np.arange(total, dtype=np.int64)


def _with_lefts(table, offsets, values, valid):
    index = table.schema.get_field_index("bucket_lefts")
    field = table.schema.field(index)
    lefts = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                     pa.array(values.view(np.float64)), type=field.type,
                                     mask=pa.array(~valid))
    return table.set_column(index, field, lefts)


def compact(table):
    """`table` (histogram rows) with the left edges that repeat the right edges cut to the
    first one; the table itself when no row has any."""
    if table.num_rows == 0 or "bucket_lefts" not in table.column_names:
        return table
    lo, lv, lvalid = _lists(table["bucket_lefts"])
    mo, mv, _ = _lists(table["bucket_limits"])
    n = np.diff(lo)
    eligible = lvalid & (n == np.diff(mo)) & (n >= 2)
    if not eligible.any():
        return table
    if np.array_equal(lo, mo):   # every row's lists line up: one comparison of the columns
        at = np.flatnonzero(lv[1:] != mv[:-1])
        row = np.searchsorted(lo, at, side="right") - 1
        inner = at < lo[row + 1] - 1            # not a row's last value against the next row
        eligible[row[inner]] = False
    else:
        rows = np.flatnonzero(eligible)
        inner = n[rows] - 1                     # left edges 1.. against right edges ..-1
        differs = np.bincount(np.repeat(np.arange(rows.size), inner),
                              weights=lv[_runs(lo[rows] + 1, inner)] != mv[_runs(mo[rows], inner)],
                              minlength=rows.size)
        eligible[rows[differs > 0]] = False
    cut = np.flatnonzero(eligible)
    if not cut.size:
        return table
    # every value but the cut rows' 2nd..last: a +1/-1 difference array marks those spans
    # (no two marks fall on one place: a cut row has two values or more)
    span = np.zeros(len(lv) + 1, np.int64)
    span[lo[cut] + 1] = 1
    span[lo[cut + 1]] = -1
    keep = np.cumsum(span[:-1]) == 0
    counts = np.where(lvalid, n, 0)
    counts[cut] = 1
    offsets = np.zeros(len(n) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    return _with_lefts(table, offsets, lv[keep], lvalid)


def expand(table):
    """`table` with every cut `bucket_lefts` whole again (compact's inverse)."""
    if table.num_rows == 0 or "bucket_lefts" not in table.column_names:
        return table
    lo, lv, lvalid = _lists(table["bucket_lefts"])
    mo, mv, _ = _lists(table["bucket_limits"])
    n, m = np.diff(lo), np.diff(mo)
    cut = lvalid & (n == 1) & (m >= 2)
    if not cut.any():
        return table
    whole = np.where(cut, m, np.where(lvalid, n, 0))
    offsets = np.zeros(len(n) + 1, np.int64)
    np.cumsum(whole, out=offsets[1:])
    values = np.empty(int(offsets[-1]), np.int64)
    plain = ~cut & lvalid
    values[_runs(offsets[:-1][plain], n[plain])] = lv[_runs(lo[:-1][plain], n[plain])]
    rows = np.flatnonzero(cut)
    values[offsets[rows]] = lv[lo[rows]]
    values[_runs(offsets[rows] + 1, m[rows] - 1)] = mv[_runs(mo[rows], m[rows] - 1)]
    return _with_lefts(table, offsets, values, lvalid)
