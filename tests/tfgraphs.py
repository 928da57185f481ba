"""Small TF1 graphs that produce every kind of summary, for the recorder's tests."""

import io
import struct

import numpy as np


def gif_bytes(width=4, height=3, frames=2):
    """A tiny valid animated GIF (global palette of 2 colours)."""
    out = io.BytesIO()
    out.write(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0))
    out.write(b"\x00\x00\x00\xff\xff\xff")                     # palette: black, white
    out.write(b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")  # loop forever
    for f in range(frames):
        out.write(b"\x21\xf9\x04\x00\x0a\x00\x00\x00")         # 0.1 s per frame
        out.write(b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0))
        pixels = bytes(((x + y + f) % 2) for y in range(height) for x in range(width))
        out.write(b"\x02" + _lzw(pixels) + b"\x00")
    out.write(b"\x3b")
    return out.getvalue()


def _lzw(pixels, min_code=2):
    """Uncompressed-style LZW: a clear code before every pixel keeps the table trivial."""
    clear, end, bits = 1 << min_code, (1 << min_code) + 1, min_code + 1
    codes = []
    for p in pixels:
        codes += [clear, p]
    codes.append(end)
    acc, n, data = 0, 0, bytearray()
    for c in codes:
        acc |= c << n
        n += bits
        while n >= 8:
            data.append(acc & 0xFF)
            acc >>= 8
            n -= 8
    if n:
        data.append(acc)
    blocks = b"".join(bytes([len(data[i:i + 255])]) + bytes(data[i:i + 255])
                      for i in range(0, len(data), 255))
    return blocks


ODD_TAG = "odd/ünï cødé ✓ 日本 \u202e\x01 🙂"


def constant_summary(tf, summary):
    """Adds a serialized Summary as a constant op to the SUMMARIES collection."""
    op = tf.constant(summary.SerializeToString())
    tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.SUMMARIES, op)
    return op


def plugin_value(tf, tag, plugin, array, dtype=None):
    from tensorflow.core.framework import summary_pb2
    value = summary_pb2.Summary.Value(tag=tag)
    value.metadata.plugin_data.plugin_name = plugin
    value.tensor.CopyFrom(tf.make_tensor_proto(np.asarray(array, dtype=dtype)))
    return value


def build_all_kinds(tf, seed=7):
    """A trainable graph with scalars, histograms, image, GIF, audio, text, pr-curve and other
    tensors. Returns the train op; the global step is created."""
    from tensorflow.core.framework import summary_pb2
    step = tf.compat.v1.train.get_or_create_global_step()
    w = tf.compat.v1.get_variable("w", initializer=tf.constant([3.0, -2.0, 0.5]))
    loss = tf.reduce_sum(w * w)
    noise = tf.random.normal([200], seed=seed)
    tf.compat.v1.summary.scalar("loss", loss)
    tf.compat.v1.summary.scalar("nan", tf.constant(float("nan")))
    tf.compat.v1.summary.scalar("inf", tf.constant(float("inf")) * tf.sign(loss - 1.0))
    tf.compat.v1.summary.histogram("weights", w)
    tf.compat.v1.summary.histogram("noise", noise)
    img = tf.cast(tf.random.uniform([2, 6, 5, 3], seed=seed) * 255, tf.uint8)
    tf.compat.v1.summary.image("picture", img, max_outputs=2)
    tf.compat.v1.summary.audio("sound", tf.random.uniform([1, 400], -1, 1, seed=seed), 8000)
    tf.compat.v1.summary.text("note", tf.strings.format("loss is {}", loss))
    tf.compat.v1.summary.tensor_summary("matrix", tf.reshape(noise[:6], [2, 3]))
    extra = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=ODD_TAG, simple_value=2.5),
        summary_pb2.Summary.Value(tag="anim", image=summary_pb2.Summary.Image(
            height=3, width=4, colorspace=1, encoded_image_string=gif_bytes())),
        plugin_value(tf, "v2scalar", "scalars", 1.25, np.float32),
        plugin_value(tf, "v2hist", "histograms", [[0, 1, 3], [1, 2, 5]], np.float64),
        plugin_value(tf, "curve", "pr_curves", np.linspace(0, 1, 18).reshape(6, 3), np.float32),
    ])
    constant_summary(tf, extra)
    return tf.compat.v1.train.GradientDescentOptimizer(0.05).minimize(loss, global_step=step)


def read_tfevents(logdir):
    """{(step, tag): Summary.Value} of every summary in the tfevents files of logdir."""
    import glob
    import tensorflow as tf
    out = {}
    for path in sorted(glob.glob(f"{logdir}/events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                out[(event.step, v.tag)] = (event.wall_time, v)
    return out
