"""A histogram's edges stored once (store formats 8 and 9).

A TF2 histogram (a plugin tensor of [left, right, count] rows) has each bucket's left edge equal
to the right edge of the bucket before it, so `bucket_lefts` repeated `bucket_limits` but for
its first value: a third of a histogram row's bytes. Format 8 keeps such a row's `bucket_lefts`
as its first edge alone. On tools/bench_tensorboard's 15.7 MB logdir (18 000 histograms) the
segment went from 2.79 to 1.52 MB and its encoding from 44 to 24 ms, plus 7-8 ms to cut the
lists (8 ms to put them back on a read).

TensorBoard makes the edges with tf.linspace(min, max, buckets + 1) (its last one set to max),
which computes edge i as `first + i * ((last - first) / buckets)`. Format 9 keeps such a row's
`bucket_limits` as its last edge alone, as the first left edge is kept: the edges are then two
numbers: on the bench's histograms the segment went from 1.52 to 0.27 MB, and its encoding,
the cutting included, from 40 to 31.5 ms of CPU (import-tfevents' slowest encoder).

Store.read gives the whole lists back. Only rows whose edges the arithmetic gives back bit for
bit are cut (NaN and -0.0 included; evenly spaced only between finite ends, whose arithmetic
is IEEE's on every platform); any other row is stored whole. The cut rows are told apart by
their lengths, which a whole row never has (its lists have one value a bucket each):
- format 8: `bucket_lefts` of one value, `bucket_limits` of two or more;
- format 9: `bucket_lefts` and `bucket_limits` of one value each, `bucket_counts` of two or more.
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


def _with_list(table, name, offsets, values, valid):
    index = table.schema.get_field_index(name)
    field = table.schema.field(index)
    lefts = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                     pa.array(values.view(np.float64)), type=field.type,
                                     mask=pa.array(~valid))
    return table.set_column(index, field, lefts)


def compact(table):
    """`table` (histogram rows) with the left edges that repeat the right edges cut to the
    first one (format 8), and of those rows the right edges that are tf.linspace's cut to
    the last one (format 9); the table itself when no row has any."""
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
    even = _evenly_spaced(table, cut, lv[lo[cut]], mo, mv)
    if even.size:
        mvalid = table["bucket_limits"].is_valid().to_numpy(zero_copy_only=False)
        offsets, kept = _keep_one(mo, mv, even, mo[even + 1] - 1, mvalid)
        table = _with_list(table, "bucket_limits", offsets, kept, mvalid)
    offsets, kept = _keep_one(lo, lv, cut, lo[cut], lvalid)
    return _with_list(table, "bucket_lefts", offsets, kept, lvalid)


def _keep_one(offsets, values, rows, at, valid):
    """(offsets, values) of a list column with rows `rows` cut to their value at `at` (a
    gather as long as what is kept: most rows are usually cut)."""
    counts = np.where(valid, np.diff(offsets), 0)
    starts = offsets[:-1].copy()
    counts[rows] = 1
    starts[rows] = at
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out, values[_runs(starts, counts)]


def _even_edges(first, last, buckets):
    """tf.linspace's right edges of `buckets` buckets (one number for all rows) from first
    to last, a row each: edge i is first + i * step, its last `last` itself, as TensorBoard
    sets it."""
    step = (last - first) / buckets
    edges = first[:, None] + step[:, None] * np.arange(1, buckets + 1, dtype=np.float64)
    edges[:, -1] = last
    return edges


def _evenly_spaced(table, rows, firsts, mo, mv):
    """Which of the left-cut `rows` (first left edges `firsts`, as bits) have right edges
    tf.linspace's arithmetic gives back bit for bit, with a count a bucket (format 9)."""
    if "bucket_counts" not in table.column_names:
        return rows[:0]
    co, _cv, cvalid = _lists(table["bucket_counts"])
    first = firsts.view(np.float64)
    last = mv[mo[rows + 1] - 1].view(np.float64)
    k = np.diff(mo)[rows]
    ok = cvalid[rows] & (np.diff(co)[rows] == k) & np.isfinite(first) & np.isfinite(last)
    for size in np.unique(k[ok]):   # a matrix a bucket count (TensorBoard's default: 30)
        at = np.flatnonzero(ok & (k == size))
        made = _even_edges(first[at], last[at], int(size)).view(np.int64)
        ok[at] = (made == mv[mo[rows[at], None] + np.arange(size)]).all(axis=1)
    return rows[ok]


def expand(table):
    """`table` with every cut list whole again (compact's inverse)."""
    if table.num_rows == 0 or "bucket_lefts" not in table.column_names:
        return table
    lo, lv, lvalid = _lists(table["bucket_lefts"])
    mo, mv, mvalid = _lists(table["bucket_limits"])
    n, m = np.diff(lo), np.diff(mo)
    if "bucket_counts" in table.column_names:
        co, _cv, cvalid = _lists(table["bucket_counts"])
        k = np.diff(co)
        even = np.flatnonzero(lvalid & mvalid & cvalid & (n == 1) & (m == 1) & (k >= 2))
        if even.size:   # format 9: the right edges back first, then the left ones below
            whole = np.where(mvalid, m, 0)
            whole[even] = k[even]
            made = np.empty(int(k[even].sum()), np.int64)
            ends = np.cumsum(k[even])
            for size in np.unique(k[even]):
                at = np.flatnonzero(k[even] == size)
                made[(ends[at] - size)[:, None] + np.arange(size)] = _even_edges(
                    lv[lo[even[at]]].view(np.float64), mv[mo[even[at]]].view(np.float64),
                    int(size)).view(np.int64)
            mo, mv = _put_back(mo, mv, whole, even, made)
            table = _with_list(table, "bucket_limits", mo, mv, mvalid)
            m = np.diff(mo)
    cut = np.flatnonzero(lvalid & (n == 1) & (m >= 2))
    if not cut.size:
        return table
    whole = np.where(lvalid, n, 0)
    whole[cut] = m[cut]
    made = np.empty(int((m[cut] - 1).sum()), np.int64)
    made[:] = mv[_runs(mo[cut], m[cut] - 1)]
    firsts = lv[lo[cut]]
    lo, lv = _put_back(lo, lv, whole, cut, made, firsts)
    return _with_list(table, "bucket_lefts", lo, lv, lvalid)


def _put_back(offsets, values, whole, rows, made, firsts=None):
    """(offsets, values) of a list column whose `rows` are whole again: each row `whole`
    values long; a cut row's are its first value (or `firsts`) then `made`, end to end, when
    `firsts` is given, else `made` alone."""
    n = np.diff(offsets)
    out = np.zeros(len(n) + 1, np.int64)
    np.cumsum(whole, out=out[1:])
    vals = np.empty(int(out[-1]), np.int64)
    plain = np.ones(len(n), bool)
    plain[rows] = False
    plain &= whole > 0
    vals[_runs(out[:-1][plain], n[plain])] = values[_runs(offsets[:-1][plain], n[plain])]
    if firsts is None:
        vals[_runs(out[rows], whole[rows])] = made
    else:
        vals[out[rows]] = firsts
        vals[_runs(out[rows] + 1, whole[rows] - 1)] = made
    return out, vals
