"""The compiled decoder (schema/formats/_native.c) against its pure-Python twins, which are the
spec, and both against TensorFlow's own protos: the same records framed, the same exceptions
at damage, and the same rows byte for byte (Arrow IPC bytes of every table) with the same
warnings, for every kind TF writes and for damaged, truncated and non-UTF-8 input."""

import logging
import os
import random
import struct

import pyarrow as pa
import pytest

import tf2_files
import tfgraphs
from helpers import missing
from summary_oracle import comparable_rows
from tfblackbox.schema.codecs.rows import ColumnBuffers
from tfblackbox.schema.formats import native, tfrecord

PURE = "TFBLACKBOX_PURE_PYTHON"


@pytest.fixture
def compiled():
    """Skips (outside CI) or fails (under CI) where the extension was not built."""
    if not native.available():
        missing("the compiled decoder (tfblackbox.schema.formats._native)",
                "it was not built by `pip install` (no C compiler?)")


def _paths(monkeypatch, fn):
    """fn() run on the pure path, then on the compiled one, each result with the warnings
    it logged."""
    out = []
    for pure in ("1", "0"):
        monkeypatch.setenv(PURE, pure)
        assert (native.module() is None) == (pure == "1")
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        log = logging.getLogger("tfblackbox")
        log.addHandler(handler)
        try:
            result = fn()
        finally:
            log.removeHandler(handler)
        out.append((result, [r.getMessage() for r in records]))
    return out


def _ipc(tables):
    """Each table as Arrow IPC stream bytes: equal bytes, equal rows (NaNs, -0.0 and all)."""
    out = {}
    for name, table in sorted(tables.items()):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table.combine_chunks())
        out[name] = sink.getvalue().to_pybytes()
    return out


# -- the extension is there ------------------------------------------------------------------

def test_the_extension_is_built_and_the_env_var_forces_the_pure_path(compiled, monkeypatch):
    monkeypatch.delenv(PURE, raising=False)
    assert native.module() is not None
    assert native.module().masked_crc(b"tfblackbox") == tfrecord.masked_crc(b"tfblackbox")
    monkeypatch.setenv(PURE, "1")
    assert native.module() is None


def test_without_the_extension_the_pure_path_runs_with_a_one_line_notice_once(monkeypatch,
                                                                              tmp_path):
    import sys
    monkeypatch.delenv(PURE, raising=False)
    monkeypatch.setattr(native, "_state", "untried")
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setitem(sys.modules, "tfblackbox.schema.formats._native", None)   # not built
    monkeypatch.delattr(sys.modules["tfblackbox.schema.formats"], "_native", raising=False)
    path = tmp_path / "records"
    tfrecord.write_records(path, [b"a", b"bc"])
    notices = []
    handler = logging.Handler()
    handler.emit = lambda r: notices.append(r.getMessage())
    logging.getLogger("tfblackbox").addHandler(handler)
    try:
        got = [tfrecord.read_records(path) for _ in range(3)]
    finally:
        logging.getLogger("tfblackbox").removeHandler(handler)
    assert got == [[(0, b"a"), (17, b"bc")]] * 3
    assert len(notices) == 1 and "not built" in notices[0] and "\n" not in notices[0]


# -- framing -----------------------------------------------------------------------------------

def _read_all(path, max_bytes):
    """Everything RecordReader makes of a file: records, partial bytes, and how it stops."""
    reader, got = tfrecord.RecordReader(path), []
    for _ in range(1000):
        try:
            batch = reader.read(max_bytes)
        except tfrecord.BlackboxError as e:
            got.append((type(e).__name__, str(e)))
            break
        if not batch:
            break
        got.append(batch)
    return got, reader.offset, reader.index, reader.partial


def test_framing_is_the_same_at_every_cut_and_every_damage(compiled, monkeypatch, tmp_path):
    rng = random.Random(3)
    records = [b"", b"x", bytes(range(256)) * 3, os.urandom(5000)] + \
        [os.urandom(rng.randint(1, 60)) for _ in range(20)]
    good = b"".join(tfrecord.frame(r) for r in records)
    for r in records:
        assert native.module().masked_crc(r) == tfrecord.masked_crc(r)
    cases = [good[:n] for n in range(0, len(good), 7)] + [good]
    for _ in range(60):   # one byte flipped: in a length, its crc, data or a data crc
        at = rng.randrange(len(good))
        cases.append(good[:at] + bytes([good[at] ^ (1 << rng.randrange(8))]) + good[at + 1:])
    path = tmp_path / "records"
    seen = set()
    for case in cases:
        path.write_bytes(case)
        for max_bytes in (1 << 20, 100):
            (pure, _w), (comp, _w2) = _paths(
                monkeypatch, lambda m=max_bytes: _read_all(path, m))
            assert pure == comp, (len(case), max_bytes)
            seen.update(x[0] for x in pure[0] if isinstance(x, tuple))
    assert seen == {"CorruptRecordError"}


# -- summaries (SummaryHook's decoder) -----------------------------------------------------------

def _decode_summary(data):
    from tfblackbox.schema.codecs.summary_decode import decode_summary
    buffers = ColumnBuffers(attempt=2)
    try:
        decode_summary(data, 7, 1.5, buffers)
        error = None
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    return _ipc(buffers.take()), error, buffers.rows


def _summary_oracle(data):
    import summary_oracle
    buffers = ColumnBuffers(attempt=2)
    try:
        summary_oracle.decode_summary(data, 7, 1.5, buffers)
    except Exception:
        pass
    return {name: comparable_rows(t) for name, t in buffers.take().items()}


def _odd_summary():
    """Every kind, plus what the fast paths must leave alone."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2
    s = summary_pb2.Summary()
    s.value.add(tag="loss", simple_value=0.25)
    s.value.add(tag="nan", simple_value=float("nan"))
    h = s.value.add(tag="w/hist").histo
    h.min, h.max, h.num, h.sum, h.sum_squares = -1.0, 2.0, 5.0, 3.0, 9.0
    h.bucket_limit.extend([-1.0, 0.0, 2.0])
    h.bucket.extend([1.0, 3.0, 1.0])
    s.value.add(tag="empty-histo").histo.SetInParent()
    s.value.add(tag="nothing")
    s.value.add(tag="with-node", simple_value=1.0, node_name="n")
    a = s.value.add(tag="clip").audio
    a.sample_rate, a.num_channels, a.length_frames = 8000.0, 1, 3
    a.encoded_audio_string, a.content_type = b"RIFF....", "audio/wav"
    for array, plugin in ((np.float32(2.5), "scalars"), (np.int64(7), ""),
                          (np.array([[b"a", b"b"]]), "text"), (np.array([True]), "custom")):
        s.value.append(tfgraphs.plugin_value(tf, f"t/{plugin}/{array.dtype}", plugin, array))
    data = s.SerializeToString()
    bad_tag = b"\x0a\x07loss\xff\xfe!" + b"\x15" + struct.pack("<f", 2.5)
    return data + b"\x0a" + bytes([len(bad_tag)]) + bad_tag


def test_summaries_decode_to_the_same_rows_on_both_paths_and_as_tfs_protos(
        compiled, monkeypatch, graph):
    import tensorflow as tf
    tfgraphs.build_all_kinds(tf)
    op = tf.compat.v1.summary.merge_all()
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        tf1 = sess.run(op)
    odd = _odd_summary()
    cases = [tf1, odd, odd + b"\x12\x00", odd + b"\xff\xff\xff", odd[:-3], odd[:len(odd) // 2]]
    for data in cases:
        (pure, pw), (comp, cw) = _paths(monkeypatch, lambda d=data: _decode_summary(d))
        assert pure == comp and pw == cw
    for data in (tf1, odd):
        monkeypatch.setenv(PURE, "0")
        buffers = ColumnBuffers(attempt=2)
        from tfblackbox.schema.codecs.summary_decode import decode_summary
        decode_summary(data, 7, 1.5, buffers)
        ours = {name: comparable_rows(t) for name, t in buffers.take().items()}
        assert ours == _summary_oracle(data)


# -- tfevents records (the tf.summary capture and import-tfevents) ------------------------------

def _decode_file(records, namespace=""):
    from tfblackbox.schema.codecs.tfevents_decode import FileSource, decode_records
    src = FileSource("/abs/events", "ns/events", namespace)
    buffers = ColumnBuffers(attempt=3)
    for i in range(0, len(records), 17):   # in chunks, as the tail and the import hand them
        decode_records(src, records[i:i + 17], buffers)
    return _ipc(buffers.take()), buffers.rows, (src.last_step, src.last_wall)


def _tf1_file(tmp_path):
    """A TF1 FileWriter's file: a tag's plugin metadata only on its first value."""
    import tensorflow as tf
    logdir = str(tmp_path / "tf1")
    with tf.Graph().as_default():
        train = tfgraphs.build_all_kinds(tf)
        op = tf.compat.v1.summary.merge_all()
        writer = tf.compat.v1.summary.FileWriter(logdir)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for step in range(3):
                summary, _ = sess.run([op, train])
                writer.add_summary(summary, step)
        writer.close()
    [path] = tf2_files.event_files(logdir)
    return path


def _damaged(records):
    """Each record as written, and copies with a non-UTF-8 tag, cut short, a byte flipped."""
    rng = random.Random(5)
    out = []
    for _off, data in records:
        out.append(data)
        at = data.find(b"\x0a", 12)   # a length-delimited field 1 (a value, a tag)
        if 0 <= at < len(data) - 3:
            out.append(data[:at + 2] + b"\xff" + data[at + 3:])
        out.append(data[:len(data) * 2 // 3])
        flip = rng.randrange(len(data)) if data else 0
        if data:
            out.append(data[:flip] + bytes([data[flip] ^ 0x40]) + data[flip + 1:])
    return [(i * 10, i, d) for i, d in enumerate(out)]


@pytest.mark.tf
def test_tfevents_records_decode_to_the_same_rows_on_both_paths(compiled, monkeypatch,
                                                                tmp_path):
    tf2_files.run_script("loop", tmp_path / "tf2", "--steps", "4")
    files = tf2_files.event_files(tmp_path / "tf2") + [_tf1_file(tmp_path)]
    for path in files:
        written = tfrecord.read_records(path)
        plain = [(off, i, d) for i, (off, d) in enumerate(written)]
        for records, namespace in ((plain, ""), (plain, "train"),
                                   (_damaged(written), "x")):
            (pure, pw), (comp, cw) = _paths(
                monkeypatch, lambda r=records, ns=namespace: _decode_file(r, ns))
            assert pure == comp, path
            assert pw == cw
    assert any("not an Event" in w for w in pw)   # damage was there, and said the same


@pytest.mark.tf
def test_tfevents_rows_are_the_ones_tfs_protos_give(compiled, monkeypatch, tmp_path):
    import pyarrow.ipc
    tf2_files.run_script("loop", tmp_path / "tf2", "--steps", "4")
    [path] = tf2_files.event_files(tmp_path / "tf2")
    records = [(off, i, d) for i, (off, d) in enumerate(tfrecord.read_records(path))]
    monkeypatch.setenv(PURE, "0")
    ipc, _rows, _last = _decode_file(records)
    ours = {name: comparable_rows(pyarrow.ipc.open_stream(data).read_all())
            for name, data in ipc.items() if name != "tfevents_records"}
    theirs = {}
    for event in tf2_files.tf_events(path):
        if event.HasField("summary"):
            buffers = ColumnBuffers(attempt=3)
            import summary_oracle
            summary_oracle.decode_summary(event.summary.SerializeToString(), event.step,
                                          event.wall_time, buffers)
            for name, table in buffers.take().items():
                theirs.setdefault(name, []).extend(comparable_rows(table))
    assert {k: v for k, v in ours.items() if v} == theirs
    assert {"scalars", "histograms", "media"} <= set(theirs)


def test_a_build_of_other_sources_is_not_used(monkeypatch, caplog):
    """An editable install keeps its old build until reinstalled: a build whose ABI is not
    the sources' is refused with the notice (its functions take other arguments), and the
    pure paths run."""
    from tfblackbox.schema.formats import _native
    monkeypatch.delenv("TFBLACKBOX_PURE_PYTHON", raising=False)
    monkeypatch.setattr(native, "_state", "untried")
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(_native, "ABI", native.ABI - 1)
    with caplog.at_level(logging.WARNING, logger="tfblackbox"):
        assert native.module() is None
    assert not native.available()
    assert f"ABI {native.ABI - 1}, these need {native.ABI}" in caplog.text
    monkeypatch.setattr(_native, "ABI", native.ABI)
    monkeypatch.setattr(native, "_state", "untried")
    assert native.module() is _native and native.available()
