"""An importer's segment group encoded on a thread a table (schema/store/group_encoder.py):
the rows handed over batch by batch land as one segment a table, in order, registered in one
transaction; a file that cannot be written leaves no segment and no file behind, and the rows
can be written again."""

import os

import pyarrow.parquet as pq
import pytest

from tfblackbox.schema import Store
from tfblackbox.schema.codecs.rows import ColumnBuffers
from tfblackbox.schema.store import segments
from tfblackbox.schema.store.group_encoder import GroupEncoder


def _batch(attempt, steps):
    buffers = ColumnBuffers(attempt)
    for s in steps:
        buffers.add_scalar(s, 100.0 + s, "loss", s / 2)
        buffers.add("log_values", step=s, wall_time=100.0 + s, tag="note",
                    value_json=f'"step {s}"')
    return buffers.take()


def _data_files(store):
    return sorted(os.path.relpath(os.path.join(d, n), store.root)
                  for d, _s, names in os.walk(os.path.join(store.root, "data")) for n in names)


@pytest.fixture
def store(tmp_path):
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r")
    yield store
    store.close()


def test_batches_land_as_one_segment_a_table_in_order(store):
    writer_id, attempt = store.begin_attempt("r")
    group = GroupEncoder(store.data, store.catalog, "r", writer_id)
    for start in (0, 5, 10):
        group.add(_batch(attempt, range(start, start + 5)))
    records = group.write()
    assert sorted(r.table for r in records) == ["log_values", "scalars"]
    assert [(r.row_count, r.min_step, r.max_step) for r in records] == [(15, 0, 14)] * 2
    assert [r["step"] for r in store.scalars("r").to_pylist()] == list(range(15))
    assert [r["value_json"] for r in store.read("r", "log_values").to_pylist()] == [
        f'"step {s}"' for s in range(15)]
    for r in records:   # a row group a batch; statistics for flat columns only
        meta = pq.ParquetFile(os.path.join(store.root, r.path)).metadata
        assert meta.num_row_groups == 3
        stats = {meta.schema.column(c).path: meta.row_group(0).column(c).is_stats_set
                 for c in range(meta.num_columns)}
        assert stats["step"] and stats["tag"]
    assert GroupEncoder(store.data, store.catalog, "r", writer_id).write() == []
    store.end_attempt(writer_id)


def test_a_file_that_cannot_be_written_leaves_nothing_and_the_rows_go_again(store,
                                                                            monkeypatch):
    writer_id, attempt = store.begin_attempt("r")
    write_file = segments.write_file

    def full_disk(data, run_id, table, encoded, writer_id=None):
        if table == "log_values":
            raise OSError(28, "No space left on device")
        return write_file(data, run_id, table, encoded, writer_id)

    monkeypatch.setattr(segments, "write_file", full_disk)
    group = GroupEncoder(store.data, store.catalog, "r", writer_id)
    group.add(_batch(attempt, range(3)))
    with pytest.raises(OSError, match="No space left"):
        group.write()
    assert store.segments("r") == [] and _data_files(store) == []
    monkeypatch.setattr(segments, "write_file", write_file)
    group = GroupEncoder(store.data, store.catalog, "r", writer_id)
    group.add(_batch(attempt, range(3)))
    assert len(group.write()) == 2
    assert [r["step"] for r in store.scalars("r").to_pylist()] == [0, 1, 2]
    store.end_attempt(writer_id)


def test_a_batch_that_does_not_fit_its_table_fails_the_write_not_the_caller(store):
    """An encoder thread's error surfaces at write(), where the caller handles errors; add()
    never raises for it, and nothing is registered."""
    import pyarrow as pa
    writer_id, _attempt = store.begin_attempt("r")
    group = GroupEncoder(store.data, store.catalog, "r", writer_id)
    group.add({"scalars": pa.table({"step": ["not a step"]})})
    with pytest.raises(ValueError):   # the cast to the table's schema
        group.write()
    assert store.segments("r") == [] and _data_files(store) == []
    store.end_attempt(writer_id)


def test_statistics_only_for_flat_columns():
    """Readers prune row groups by step; min/max of list and binary columns serve none and
    cost a quarter of a histogram segment's encoding."""
    import io

    import numpy as np
    buffers = ColumnBuffers(1)
    for s in range(3):
        buffers.add_histogram(s, 1.0 + s, "w", {
            "num": 3.0, "min": 0.0, "max": 2.0, "sum": 3.0, "sum_squares": 5.0,
            "bucket_limits": np.array([0.5, 1.5, 2.5]), "bucket_counts": np.array([1., 1., 1.])})
    _table, blob = segments.encode(buffers.take()["histograms"], "histograms")
    meta = pq.ParquetFile(io.BytesIO(blob)).metadata
    stats = {meta.schema.column(c).path: meta.row_group(0).column(c).is_stats_set
             for c in range(meta.num_columns)}
    assert stats["step"] and stats["wall_time"] and stats["tag"] and stats["num"]
    assert not any(v for k, v in stats.items() if k.startswith("bucket_")), stats


def test_float_columns_are_byte_stream_split_and_read_back_exactly():
    """Floats, and lists of them, are stored in byte planes (smaller and quicker to compress
    than plain); the values come back bit for bit, NaN and the infinities included."""
    import io

    import numpy as np
    buffers = ColumnBuffers(1)
    edges = np.array([-np.inf, -1e-300, 0.0, 5e-324, 1.5, np.nan, np.inf])
    for s in range(3):
        buffers.add_histogram(s, 1.0 + s, "w", {
            "num": 3.0, "min": -0.0, "max": np.nan, "sum": 3.0, "sum_squares": 5.0,
            "bucket_limits": edges * (s + 1), "bucket_counts": np.arange(7.0)})
        buffers.add_scalar(s, 1.0 + s, "loss", 0.1 * s)
    tables = buffers.take()
    for name, column in (("histograms", "bucket_limits"), ("scalars", "value")):
        table, blob = segments.encode(tables[name], name)
        meta = pq.ParquetFile(io.BytesIO(blob)).metadata
        encodings = {meta.schema.column(c).path: meta.row_group(0).column(c).encodings
                     for c in range(meta.num_columns)}
        floats = [p for p in encodings if p.split(".")[0] in (column, "wall_time", "num")]
        assert floats and all("BYTE_STREAM_SPLIT" in encodings[p] for p in floats), encodings
        assert "BYTE_STREAM_SPLIT" not in encodings["step"]
        back = pq.read_table(io.BytesIO(blob))
        for f in table.schema.names:
            got, want = back[f].to_pylist(), table[f].to_pylist()
            assert np.array_equal(np.asarray(got, dtype=object).astype(str),
                                  np.asarray(want, dtype=object).astype(str)), f
