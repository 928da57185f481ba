"""import-tfevents' chunk decoder (codecs/tfevents_columns.py: frame_spans + decode_chunk into
flat columns) against decode_records, the spec: the same rows byte for byte (Arrow IPC bytes
of every table, as a segment keeps them), the same warnings and the same last step, on the
compiled path and the pure one, for what TF1 and TF2 write and for damaged, cut and non-UTF-8
records between good ones."""

import numpy as np
import pytest

import tf2_files
from helpers import missing
from test_native_decode import PURE, _damaged, _ipc, _paths, _tf1_file
from tfblackbox.schema.codecs import histogram_edges, tfevents_columns
from tfblackbox.schema.codecs.rows import ColumnBuffers
from tfblackbox.schema.codecs.tfevents_decode import FileSource, decode_records
from tfblackbox.schema.formats import native, tfrecord


@pytest.fixture
def compiled():
    if not native.available():
        missing("the compiled decoder (tfblackbox.schema.formats._native)",
                "it was not built by `pip install` (no C compiler?)")


def _decode_file(path, namespace, max_bytes, next_chunk):
    """Rows, row count, last step and wall time, and record bytes of one file decoded chunk
    by chunk: next_chunk(src, reader, buffers, max_bytes) -> (records, bytes), (0, 0) at the
    end."""
    src = FileSource("/abs/events", "ns/events", namespace)
    buffers = ColumnBuffers(attempt=3)
    reader = tfrecord.RecordReader(path)
    total = 0
    while True:
        count, size = next_chunk(src, reader, buffers, max_bytes)
        if not count:
            break
        total += size
    return _ipc(_stored(buffers.take())), buffers.rows, (src.last_step, src.last_wall), total


def _stored(tables):
    """The rows as a segment keeps them: decode_chunk writes a histogram's edges in that form
    (histogram_edges.py), decode_records whole, and the store cuts them (a no-op on cut rows).
    That cutting is exact both ways (tests/test_histogram_edges.py)."""
    return {name: histogram_edges.compact(t) if name == histogram_edges.TABLE else t
            for name, t in tables.items()}


def _span_chunk(src, reader, buffers, max_bytes):
    first = reader.index
    buf, base, spans = reader.read_spans(max_bytes)
    if not spans:
        return 0, 0
    count, size = tfevents_columns.decode_chunk(src, buf, base, spans, first, buffers)
    assert count == len(spans) // 8
    return count, size


def _record_chunk(src, reader, buffers, max_bytes):
    batch = reader.read(max_bytes)
    first = reader.index - len(batch)
    records = [(off, first + i, data) for i, (off, data) in enumerate(batch)]
    decode_records(src, records, buffers)
    return len(records), sum(len(d) for _o, _i, d in records)


def _by_chunks(path, namespace, max_bytes):
    """The import's way: read_spans, decode_chunk."""
    return _decode_file(path, namespace, max_bytes, _span_chunk)


def _by_next(path, namespace, max_bytes):
    """The import's loop (decode_next)."""
    return _decode_file(path, namespace, max_bytes, tfevents_columns.decode_next)


def _by_records(path, namespace, max_bytes):
    """The spec: read, decode_records."""
    return _decode_file(path, namespace, max_bytes, _record_chunk)


def _files(tmp_path):
    """TF2's and TF1's event files, and one of every record damaged three ways between them
    (each framed with good checksums: the damage is in the Event, not the framing)."""
    tf2_files.run_script("loop", tmp_path / "tf2", "--steps", "4")
    files = tf2_files.event_files(tmp_path / "tf2") + [_tf1_file(tmp_path)]
    damaged = tmp_path / "damaged.tfevents"
    records = [r for f in files for r in tfrecord.read_records(f)]
    damaged.write_bytes(b"".join(tfrecord.frame(d) for _o, _i, d in _damaged(records)))
    return files + [str(damaged)]


@pytest.mark.tf
def test_chunks_decode_to_the_rows_of_decode_records_on_both_paths(compiled, monkeypatch,
                                                                   tmp_path):
    files = _files(tmp_path)
    arrow_runs = []   # chunks decode_chunk's columns made Arrow tables of
    add = tfevents_columns._add
    monkeypatch.setattr(tfevents_columns, "_add",
                        lambda *a: arrow_runs.append(a[0].file) or add(*a))
    for path in files:
        for namespace, max_bytes, min_run in (("", 1 << 20, 1024), ("train", 1 << 20, 1),
                                             ("x", 700, 1), ("", 333, 64)):
            monkeypatch.setattr(tfevents_columns, "MIN_RUN", min_run)
            monkeypatch.setenv(PURE, "0")
            spec = _by_records(path, namespace, max_bytes)
            (pure, pw), (comp, cw) = _paths(
                monkeypatch, lambda p=path, ns=namespace, m=max_bytes: _by_chunks(p, ns, m))
            assert pure == spec, (path, namespace, max_bytes)
            assert comp == spec, (path, namespace, max_bytes, min_run)
            assert pw == cw
    assert len(arrow_runs) > 10


def _tf2_records(steps):
    """Events as tf.summary writes them at every step (TensorBoard's protos, no TF): a scalar
    and a histogram tensor, each value with its plugin metadata."""
    import numpy as np
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

    def value(tag, plugin, dtype, dims, content):
        v = summary_pb2.Summary.Value(tag=tag, tensor=tensor_pb2.TensorProto(
            dtype=dtype, tensor_content=content))
        v.tensor.tensor_shape.dim.extend([v.tensor.tensor_shape.Dim(size=d) for d in dims])
        v.metadata.plugin_data.plugin_name = plugin
        return v

    out = [event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString()]
    for step in range(steps):
        h = np.array([[i, i + 1, step + i] for i in range(5)], "<f8")
        for v in (value("loss", "scalars", 1, [], np.float32(step / 3).tobytes()),
                  value("w", "histograms", 2, [5, 3], h.tobytes())):
            out.append(event_pb2.Event(wall_time=2.0 + step, step=step, summary=summary_pb2.Summary(
                value=[v])).SerializeToString())
    return out


def test_decode_chunk_takes_every_record_of_a_tf2_loop_in_one_call(compiled, monkeypatch,
                                                                   tmp_path):
    """Scalars and histograms as tf.summary writes them never leave the compiled path, and
    their rows are decode_records'."""
    path = tmp_path / "events.out.tfevents.1"
    tfrecord.write_records(str(path), _tf2_records(600))
    monkeypatch.setenv(PURE, "0")
    nat = native.module()
    buf = path.read_bytes()
    spans, end, status, _need = nat.frame_spans(buf, 0)
    assert (end, status, len(spans) // 8) == (len(buf), 0, 1201)
    src = FileSource("/abs/events", "events", "")
    stop, step, wall, tags, cols = nat.decode_chunk(buf, spans, 0, 0, 0, "", src.metadata,
                                                    src.tags)
    assert (stop, step, wall, sorted(tags)) == (1201, 599, 601.0, ["", "loss", "w"])
    # edges 0..5, evenly spaced: a row keeps its first left edge and its last right one alone
    limits, counts, lefts = (np.frombuffer(cols[k], "<f8") for k in (24, 25, 26))
    assert (limits.tolist(), lefts.tolist(), len(counts)) == ([5.0] * 600, [0.0] * 600, 3000)
    whole = ColumnBuffers(attempt=1)
    tfevents_columns._add(src, whole, tags, cols)
    got = histogram_edges.expand(whole.take()["histograms"])
    assert got["bucket_limits"].to_pylist() == [[1.0, 2.0, 3.0, 4.0, 5.0]] * 600
    assert got["bucket_lefts"].to_pylist() == [[0.0, 1.0, 2.0, 3.0, 4.0]] * 600
    assert _by_chunks(str(path), "", 1 << 20) == _by_records(str(path), "", 1 << 20)
    monkeypatch.setenv(PURE, "1")
    assert _by_chunks(str(path), "", 1000) == _by_records(str(path), "", 1 << 20)
    arrow_runs = []
    add = tfevents_columns._add
    monkeypatch.setattr(tfevents_columns, "_add", lambda *a: arrow_runs.append(1) or add(*a))
    for pure in ("1", "0"):
        monkeypatch.setenv(PURE, pure)
        for max_bytes in (1 << 20, 5000):
            assert _by_next(str(path), "", max_bytes) == _by_records(str(path), "", 1 << 20)
    assert arrow_runs == [1]   # the compiled path's one chunk of 1 MB; 5000 bytes: lists


def test_a_tag_whose_metadata_changes_decodes_as_decode_records_does(compiled, monkeypatch,
                                                                     tmp_path):
    """decode_chunk remembers each tag's metadata within a call: a tag whose metadata (and so
    its plugin) changes between records, or whose metadata is left out (TF1's way), must give
    decode_records' rows and leave the file's metadata as decode_records leaves it."""
    import numpy as np
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

    def event(step, plugin, content, dims=(), dtype=1, tag="loss"):
        v = summary_pb2.Summary.Value(tag=tag, tensor=tensor_pb2.TensorProto(
            dtype=dtype, tensor_content=content))
        v.tensor.tensor_shape.dim.extend([v.tensor.tensor_shape.Dim(size=d) for d in dims])
        if plugin is not None:
            v.metadata.plugin_data.plugin_name = plugin
        return event_pb2.Event(wall_time=step, step=step, summary=summary_pb2.Summary(
            value=[v])).SerializeToString()

    f4 = np.float32(1.5).tobytes()
    h = np.arange(9, dtype="<f8").tobytes()
    records = []
    for step in range(200):
        kind = step % 7
        records.append(
            event(step, "scalars", f4) if kind in (0, 1) else
            event(step, "custom", f4) if kind == 2 else           # another plugin: odd
            event(step, None, f4) if kind == 3 else               # the last metadata's plugin
            event(step, "histograms", h, (3, 3), 2, "w") if kind == 4 else
            event(step, "histograms", f4) if kind == 5 else       # scalar content: odd
            event(step, "scalars", f4, tag="lo\xdfs"))            # not ASCII
    path = tmp_path / "events.out.tfevents.2"
    tfrecord.write_records(str(path), records)
    monkeypatch.setattr(tfevents_columns, "MIN_RUN", 1)
    for ns in ("", "train"):
        monkeypatch.setenv(PURE, "0")
        spec = _by_records(str(path), ns, 1 << 20)
        assert _by_chunks(str(path), ns, 1 << 20) == spec
        assert _by_chunks(str(path), ns, 900) == spec


def test_a_file_of_odd_records_costs_one_decode_chunk_call_a_block(compiled, monkeypatch,
                                                                     tmp_path):
    """Records decode_chunk leaves to Python (TF1's summaries of many values) are handed to
    decode_records a block at a time: a call a record allocated the chunk's columns each
    time (1.5x the CPU of the import before decode_chunk)."""
    import types
    from tensorboard.compat.proto import event_pb2, summary_pb2
    records = []
    for step in range(1000):
        s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="a", simple_value=step),
                                       summary_pb2.Summary.Value(tag="b", simple_value=1)])
        records.append(event_pb2.Event(step=step, summary=s).SerializeToString())
    path = tmp_path / "events.out.tfevents.4"
    tfrecord.write_records(str(path), records)
    monkeypatch.setenv(PURE, "0")
    nat, calls = native.module(), []

    def decode_chunk(*args):
        calls.append(args[2])
        return nat.decode_chunk(*args)
    proxy = types.SimpleNamespace(decode_chunk=decode_chunk)
    monkeypatch.setattr(tfevents_columns, "native", types.SimpleNamespace(module=lambda: proxy))
    got = _by_chunks(str(path), "", 1 << 20)
    assert len(calls) <= 1000 // tfevents_columns.LIST_BLOCK + 1
    monkeypatch.setattr(tfevents_columns, "native", native)
    assert got == _by_records(str(path), "", 1 << 20)


def test_an_import_through_the_chunk_path_resumes_and_restores_byte_for_byte(
        compiled, monkeypatch, tmp_path):
    """import-tfevents of a file long enough for decode_chunk's Arrow tables, cut in the
    middle of a record, then whole: the same store rows on both paths, nothing doubled, and
    the file written back byte for byte."""
    from tfblackbox.ingest import tensorboard as import_tfevents
    from tfblackbox.schema import Store
    from tfblackbox.schema.codecs.tfevents_restore import write_logdir
    logdir = tmp_path / "logs"
    logdir.mkdir()
    path = logdir / "events.out.tfevents.5"
    tfrecord.write_records(str(path), _tf2_records(1500))
    data = path.read_bytes()
    cut = tfrecord.read_records(str(path))[2100][0] + 20
    arrow_runs = []
    add = tfevents_columns._add
    monkeypatch.setattr(tfevents_columns, "_add", lambda *a: arrow_runs.append(1) or add(*a))
    tables = {}
    for pure in ("1", "0"):
        monkeypatch.setenv(PURE, pure)
        store = Store.create(str(tmp_path / f"store{pure}"))
        path.write_bytes(data[:cut])
        [first] = import_tfevents.import_logdir(store, str(logdir))
        assert first["records"] == 2100 and first["problems"]
        path.write_bytes(data)
        [second] = import_tfevents.import_logdir(store, str(logdir))
        assert second["records"] == 3001 - 2100 and not second["problems"]
        [third] = import_tfevents.import_logdir(store, str(logdir))
        assert third["records"] == 0
        out = tmp_path / f"restored{pure}"
        write_logdir(store, first["run_id"], out)
        assert (out / path.name).read_bytes() == data
        tables[pure] = {name: _ipc({name: store.read(first["run_id"], name)})
                        for name in ("scalars", "histograms", "tfevents_records")}
    assert tables["0"] == tables["1"]
    assert arrow_runs == [1]   # the first import's 2100 records; the 901 after: the lists


def test_span_chunks_cut_a_read_as_the_tail_cuts_its_records(compiled, monkeypatch, tmp_path):
    """The capture's tail hands the writer SpanChunks (read_spans cut by record bytes): they
    hold every record once, in order, with read()'s offsets, indices and bytes, no chunk past
    the limit unless one record is, and their rows are decode_records' rows."""
    path = tmp_path / "events.out.tfevents.3"
    records = _tf2_records(300)
    records.insert(7, b"x" * 5000)   # one record larger than a chunk
    tfrecord.write_records(str(path), records)
    spec = [(off, i, data) for i, (off, data) in enumerate(tfrecord.RecordReader(
        str(path)).read())]
    monkeypatch.setenv(PURE, "0")
    for limit in (1 << 20, 4096, 700, 1):
        reader = tfrecord.RecordReader(str(path))
        first = reader.index
        chunks = tfevents_columns.SpanChunk.split(*reader.read_spans(), first, limit)
        got = [rec for c in chunks for rec in c]
        assert got == spec, limit
        assert [c.nbytes for c in chunks] == [sum(len(d) for _o, _i, d in c) for c in chunks]
        assert all(c.nbytes <= limit or len(c) == 1 for c in chunks), limit
        assert chunks[-1][-1] == spec[-1] and chunks[0][0:2] == spec[0:min(2, len(chunks[0]))]
        expected = {1 << 20: (1, 1), 1: (len(spec), len(spec))}.get(limit, (2, len(spec) - 1))
        assert expected[0] <= len(chunks) <= expected[1], limit
        src = FileSource("/abs/events", "ns/events", "")
        buffers = ColumnBuffers(attempt=3)
        for c in chunks:
            c.decode_into(src, buffers)
        assert _ipc(_stored(buffers.take())) == _by_records(str(path), "", 1 << 20)[0], limit
    assert tfevents_columns.SpanChunk.split(b"", 0, b"", 0, 1 << 20) == []
