"""The summary decoder (schema/codecs/summary_decode.py: the wire format, no TensorFlow) gives the
very rows an independent decoder on TF's own protos gives (tests/summary_oracle.py), on
summaries TF itself wrote: every kind of the TF1 ops, a TF2 tf.summary file, odd and broken
values."""

import struct
import subprocess
import sys

import numpy as np
import pytest

import tf2_files
import tfgraphs
from summary_oracle import comparable_rows
from tfblackbox.schema.formats import tensor_proto, tfevents, tfrecord
from tfblackbox.schema.codecs.rows import ColumnBuffers


def _decode(decode, data):
    buffers = ColumnBuffers(attempt=2)
    try:
        decode(data, 7, 1.5, buffers)
    except Exception as e:   # both raise WireFormatError after keeping the rest
        error = type(e).__name__
    else:
        error = None
    return {name: comparable_rows(t) for name, t in buffers.take().items()}, error


def _same(data):
    import summary_oracle
    from tfblackbox.schema.codecs import summary_decode
    ours, theirs = (_decode(summary_decode.decode_summary, data),
                    _decode(summary_oracle.decode_summary, data))
    assert ours == theirs
    return ours[0]


def test_every_tf1_summary_kind(graph):
    import tensorflow as tf
    tfgraphs.build_all_kinds(tf)
    op = tf.compat.v1.summary.merge_all()
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        data = sess.run(op)
    rows = _same(data)
    assert {r["tag"] for r in rows["scalars"]} >= {"loss", "nan", "inf", tfgraphs.ODD_TAG,
                                                   "v2scalar"}
    kinds = sorted(r["kind"] for r in rows["media"])
    assert kinds == ["audio", "image", "image", "image", "pr_curve", "text"]
    assert [r["tag"] for r in rows["tensors"]] == ["matrix"]
    assert {r["source"] for r in rows["histograms"]} == {"histo", "tensor"}


def test_every_record_of_a_tf2_file():
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        tf2_files.run_script("loop", f"{tmp}/logs")
        [path] = tf2_files.event_files(f"{tmp}/logs")
        seen = set()
        for _off, data in tfrecord.read_records(path):
            ev = tfevents.parse_event(data)
            if ev.summary:
                rows = _same(data[ev.summary[0]:ev.summary[1]])
                seen.update(rows)
    assert seen == {"scalars", "histograms", "media", "tensors"}


def test_odd_values_tags_that_are_not_utf8_and_bytes_that_do_not_parse():
    from tensorflow.core.framework import summary_pb2
    s = summary_pb2.Summary()
    s.value.add(tag="loss", simple_value=0.25)
    h = s.value.add(tag="w/hist").histo
    h.min, h.max, h.num = -1.0, 2.0, 5.0
    h.bucket_limit.extend([-1.0, 0.0, 2.0])
    h.bucket.extend([1.0, 3.0, 1.0])
    s.value.add(tag="empty-histo").histo.SetInParent()
    s.value.add(tag="nothing")
    a = s.value.add(tag="clip").audio
    a.sample_rate, a.num_channels, a.length_frames = 8000.0, 1, 3
    a.encoded_audio_string, a.content_type = b"RIFF....", "audio/wav"
    for array, plugin in ((np.float32(2.5), "scalars"), (np.int64(7), ""),
                          (np.array([1.0, 2.0]), "scalars"),      # not a scalar: kept
                          (np.array([[b"a", b"b"], [b"c", b"d"]]), "text"),
                          (np.float16(1.5), ""), (np.array([True, False]), "custom")):
        s.value.append(tfgraphs.plugin_value(__import__("tensorflow"), f"t/{plugin}/{array.dtype}",
                                             plugin, array))
    data = s.SerializeToString()
    bad_tag = b"\x0a\x07loss\xff\xfe!" + b"\x15" + struct.pack("<f", 2.5)
    data += b"\x0a" + bytes([len(bad_tag)]) + bad_tag
    rows = _same(data)
    assert "loss\\xff\\xfe!" in [r["tag"] for r in rows["scalars"]]
    assert _same(data + b"\x12\x00")   # a field Summary does not have: kept raw, the rest decoded
    rows = _same(data + b"\xff\xff\xff")   # bytes that stop parsing
    assert rows["tensors"][-1]["plugin_name"] == "tfblackbox/undecodable"


def test_tensor_protos_as_make_ndarray_reads_them():
    import tensorflow as tf
    cases = [np.float32(1.5), np.float64(-2.25), np.int32(-7), np.array([1, 2, 3], np.int64),
             np.array([[1.0, 2.0]], np.float16), np.array([True, False]), np.uint8(200),
             np.array([b"x", b"yz"]), np.array([1 + 2j], np.complex64), np.uint64(2 ** 63 + 5),
             np.zeros((0, 3)), np.array(3, np.int16)]
    for value in cases:
        proto = tf.make_tensor_proto(value)
        ours = tensor_proto.to_ndarray(proto.SerializeToString())
        want = tf.make_ndarray(proto)
        assert ours.shape == want.shape and ours.tolist() == want.tolist(), value
    # fewer typed values than elements: the last repeats
    proto = tf.make_tensor_proto(np.float32(4.0))
    proto.tensor_shape.dim.add(size=3)
    assert tensor_proto.to_ndarray(proto.SerializeToString()).tolist() == \
        tf.make_ndarray(proto).tolist() == [4.0, 4.0, 4.0]
    bf = tf.make_tensor_proto(np.array([1.5, -2.0]), dtype=tf.bfloat16)
    assert tensor_proto.to_ndarray(bf.SerializeToString()).tolist() == [1.5, -2.0]
    with pytest.raises(ValueError, match="dtype 20"):
        tensor_proto.to_ndarray(b"\x08\x14")   # DT_RESOURCE


def test_the_decoders_of_import_tfevents_import_no_tensorflow():
    code = ("import sys; import tfblackbox.schema.codecs.summary_decode, "
            "tfblackbox.schema.codecs.tfevents_decode; assert 'tensorflow' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith('tensorflow'))")
    subprocess.run([sys.executable, "-c", code], check=True)
