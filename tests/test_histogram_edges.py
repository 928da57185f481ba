"""Store format 8 keeps a TF2 histogram's left edges once, and format 9 evenly spaced edges as
their two ends (schema/codecs/histogram_edges.py): what a segment holds, and that every reader
gets the whole lists back, bit for bit."""

import numpy as np
import pytest
import pyarrow as pa

from tfblackbox.schema import Store, compact
from tfblackbox.schema.codecs import histogram_edges
from tfblackbox.schema.store.merge import merge
from tfblackbox.schema.tables import schema_of

LIST = pa.list_(pa.float64())


def _bits(values):
    return None if values is None else np.asarray(values, np.float64).view(np.int64).tolist()


def _table(rows):
    n = len(rows)
    return pa.table({"step": np.arange(n, dtype=np.int64),
                     "bucket_limits": pa.array([r[0] for r in rows], LIST),
                     "bucket_lefts": pa.array([r[1] for r in rows], LIST)})


def _rows():
    """Left edges that repeat the right edges (also through NaN and -0.0), that differ in one
    bit, that are missing (TF1 histograms), empty, or one bucket long."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(120):
        edges = np.sort(rng.normal(size=int(rng.integers(2, 8))))
        if i % 10 == 3:
            edges[1] = np.nan
        if i % 10 == 4:
            edges[0] = -0.0
        lefts = edges[:-1].copy()
        if i % 10 == 5:
            lefts[-1] = np.nextafter(lefts[-1], np.inf)     # one bit off: kept whole
        rows.append((edges[1:].tolist(), None if i % 10 == 6 else lefts.tolist()))
    rows += [([], []), ([1.0], [0.0]), ([], None)]
    return rows


@pytest.mark.parametrize("tf1_rows", [True, False], ids=["mixed", "tf2-only"])
def test_repeated_left_edges_are_cut_to_the_first_and_come_back_bit_for_bit(tf1_rows):
    """With TF1 rows (no left edges) the lists do not line up and each row is compared on
    its own; without them the columns are compared in one go."""
    rows = [r for r in _rows() if tf1_rows or r[1] is not None]
    table = _table(rows)
    cut = histogram_edges.compact(table)
    lefts = cut["bucket_lefts"].to_pylist()
    for (limits, whole), kept in zip(rows, lefts):
        if whole is None:
            assert kept is None
        elif len(whole) >= 2 and _bits(whole[1:]) == _bits(limits[:-1]):
            assert _bits(kept) == _bits(whole[:1])
        else:
            assert _bits(kept) == _bits(whole)
    assert sum(1 for x, (_l, w) in zip(lefts, rows) if x and w and len(x) < len(w)) >= 50
    for t in (histogram_edges.expand(cut), histogram_edges.expand(cut.slice(17, 60))):
        start = 17 if t.num_rows == 60 else 0
        assert [_bits(x) for x in t["bucket_lefts"].to_pylist()] == [
            _bits(w) for _l, w in rows[start:start + t.num_rows]]
    again = histogram_edges.compact(cut)["bucket_lefts"].to_pylist()   # cut once only
    assert [_bits(x) for x in again] == [_bits(x) for x in lefts]


def _histograms(rows):
    """Whole rows of the histograms table from (limits, counts, lefts)."""
    n = len(rows)
    return pa.table({
        "step": np.arange(n, dtype=np.int64), "wall_time": np.full(n, 1e9),
        "tag": ["w"] * n, "attempt": np.ones(n, np.int32),
        "num": np.ones(n), "min": np.zeros(n), "max": np.ones(n), "sum": np.zeros(n),
        "sum_squares": np.zeros(n),
        "bucket_limits": pa.array([r[0] for r in rows], LIST),
        "bucket_counts": pa.array([r[1] for r in rows], LIST),
        "bucket_lefts": pa.array([r[2] for r in rows], LIST),
        "source": ["tensor"] * n}).cast(schema_of("histograms"))


def test_a_store_keeps_the_first_edge_and_its_readers_get_the_whole_list(tmp_path):
    """Through the store: the segment file holds the cut lists, Store.read and a merge
    into another store give the whole ones (the merge copies no row twice)."""
    rows = _rows()[:40]
    table = _histograms([(limits, [1.0] * len(limits), lefts) for limits, lefts in rows])
    store = Store.create(str(tmp_path / "a"))
    store.create_run("r")
    writer, _attempt = store.begin_attempt("r", "h", 1)
    store.write_segment("r", "histograms", table.slice(0, 25), writer)
    store.write_segment("r", "histograms", table.slice(25), writer)
    compact(store)   # one segment, re-encoded from the stored (cut) rows
    [seg] = store.segments("r", "histograms")
    raw = store.data.parquet_file(seg.path).read()["bucket_lefts"].to_pylist()
    assert [_bits(x) for x in raw] == [
        _bits(x) for x in histogram_edges.compact(table)["bucket_lefts"].to_pylist()]
    assert sum(1 for x, r in zip(raw, rows) if x and len(x) < len(r[1])) >= 20
    expected = [_bits(r[1]) for r in rows]
    got = store.read("r", "histograms")
    assert [_bits(x) for x in got["bucket_lefts"].to_pylist()] == expected
    dest = Store.create(str(tmp_path / "b"))
    source = Store.create(str(tmp_path / "c"))
    source.create_run("r")
    writer, _attempt = source.begin_attempt("r", "h", 1)
    source.write_segment("r", "histograms", table.slice(0, 25), writer)
    source.write_segment("r", "histograms", table.slice(25), writer)
    merge([source], dest)
    compact(source)
    merge([source], dest)   # the compacted segment's rows are all there: compared whole
    back = dest.read("r", "histograms", latest_only=False)
    assert [_bits(x) for x in back["bucket_lefts"].to_pylist()] == expected


def _linspace(first, last, buckets):
    """Right edges as TF's linspace kernel makes them (first + i * step, the last `last`)."""
    step = (last - first) / buckets
    return [first + step * i for i in range(1, buckets)] + [last]


def _even_rows():
    """(limits, counts, lefts): evenly spaced edges (also from -0.0, and between values far
    apart), and rows like them that are not cut: an edge one bit off, an end not finite, a
    count missing, one bucket, no left edges."""
    rng = np.random.default_rng(11)
    rows = []
    for i in range(90):
        k = [2, 5, 30][i % 3]
        first, last = sorted(rng.normal(scale=10.0 ** int(rng.integers(-3, 4)), size=2))
        if i % 9 == 1:
            first = -0.0
        limits = _linspace(first, last, k)
        if i % 9 == 4:
            limits[k // 2 - 1] = float(np.nextafter(limits[k // 2 - 1], np.inf))
        if i % 9 == 5:
            limits[-1] = np.inf
        if i % 9 == 6:
            first = np.nan
        counts = [float(c) for c in rng.integers(0, 9, size=k - (i % 9 == 7))]
        rows.append((limits, counts, None if i % 9 == 8 else [first] + limits[:-1]))
    rows += [([3.0], [1.0], [1.0]), ([], [], [])]
    return rows


def _even_table(rows):
    return pa.table({"step": np.arange(len(rows), dtype=np.int64),
                     "bucket_limits": pa.array([r[0] for r in rows], LIST),
                     "bucket_counts": pa.array([r[1] for r in rows], LIST),
                     "bucket_lefts": pa.array([r[2] for r in rows], LIST)})


def _is_even(limits, counts, lefts):
    return (lefts is not None and len(limits) >= 2 and len(counts) == len(limits)
            and np.isfinite(lefts[0]) and np.isfinite(limits[-1])
            and _bits(lefts[1:]) == _bits(limits[:-1])
            and _bits(limits) == _bits(_linspace(lefts[0], limits[-1], len(limits))))


def test_evenly_spaced_edges_are_kept_as_their_two_ends_and_come_back_bit_for_bit():
    rows = _even_rows()
    cut = histogram_edges.compact(_even_table(rows))
    limits, lefts = cut["bucket_limits"].to_pylist(), cut["bucket_lefts"].to_pylist()
    even = 0
    for (whole_limits, counts, whole_lefts), kept_limits, kept_lefts in zip(rows, limits, lefts):
        if _is_even(whole_limits, counts, whole_lefts):
            even += 1
            assert _bits(kept_limits) == _bits(whole_limits[-1:])
            assert _bits(kept_lefts) == _bits(whole_lefts[:1])
        else:   # format 8's cut at most
            assert _bits(kept_limits) == _bits(whole_limits)
    assert 40 <= even < len(rows) - 30
    again = histogram_edges.compact(cut)   # cut once only
    for name in ("bucket_limits", "bucket_lefts"):
        assert [_bits(x) for x in again[name].to_pylist()] == [
            _bits(x) for x in cut[name].to_pylist()]
    for start, n in ((0, len(rows)), (13, 50)):
        back = histogram_edges.expand(cut.slice(start, n))
        for name, i in (("bucket_limits", 0), ("bucket_counts", 1), ("bucket_lefts", 2)):
            assert [_bits(x) for x in back[name].to_pylist()] == [
                _bits(r[i]) for r in rows[start:start + n]], name


def test_a_store_read_of_the_right_edges_alone_gets_them_whole(tmp_path):
    """Store.read puts the edges back whenever bucket_limits or bucket_lefts is read, from
    the columns it does not return."""
    rows = [r for r in _even_rows() if r[2] is not None and len(r[0]) == len(r[1])]
    table = _histograms(rows)
    store = Store.create(str(tmp_path / "s"))
    store.create_run("r")
    writer, _attempt = store.begin_attempt("r", "h", 1)
    store.write_segment("r", "histograms", table, writer)
    [seg] = store.segments("r", "histograms")
    raw = store.data.parquet_file(seg.path).read()["bucket_limits"].to_pylist()
    assert sum(len(x) == 1 for x in raw) >= 40
    got = store.read("r", "histograms", columns=["step", "bucket_limits"])
    assert got.column_names == ["step", "bucket_limits"]
    assert [_bits(x) for x in got["bucket_limits"].to_pylist()] == [_bits(r[0]) for r in rows]
