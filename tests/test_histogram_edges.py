"""Store format 8 keeps a TF2 histogram's left edges once (schema/codecs/histogram_edges.py):
what a segment holds, and that every reader gets the whole lists back, bit for bit."""

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


def test_a_store_keeps_the_first_edge_and_its_readers_get_the_whole_list(tmp_path):
    """Through the store: the segment file holds the cut lists, Store.read and a merge
    into another store give the whole ones (the merge copies no row twice)."""
    rows = _rows()[:40]
    n = len(rows)
    schema = schema_of("histograms")
    table = pa.table({
        "step": np.arange(n, dtype=np.int64), "wall_time": np.full(n, 1e9),
        "tag": ["w"] * n, "attempt": np.ones(n, np.int32),
        "num": np.ones(n), "min": np.zeros(n), "max": np.ones(n), "sum": np.zeros(n),
        "sum_squares": np.zeros(n),
        "bucket_limits": pa.array([r[0] for r in rows], LIST),
        "bucket_counts": pa.array([[1.0] * len(r[0]) for r in rows], LIST),
        "bucket_lefts": pa.array([r[1] for r in rows], LIST),
        "source": ["tensor"] * n}).cast(schema)
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
