"""SummaryHook against SummarySaverHook on the same session (real TensorFlow).

Step convention: SummaryHook labels a summary with the global step read in the session.run
that computed it (before the train op increments it); SummarySaverHook labels the same summary
with the step after the increment. So tfevents step == store step + 1 here.
"""

import json
import math
import re
import struct

import numpy as np
import pytest

from tfblackbox import recorder
from tfblackbox.schema import Store, WriterError
from summary_oracle import comparable_rows
from tfgraphs import ODD_TAG, build_all_kinds, read_tfevents

# SummarySaverHook decides when to log from the same racy global-step read (its labels shift by
# one now and then when K > 1), so the differential logs every step, where both are exact.
K = 1
STEPS = 12


def train(tf, hooks, steps=STEPS, train_op=None):
    with tf.compat.v1.train.MonitoredTrainingSession(hooks=hooks) as sess:
        for _ in range(steps):
            sess.run(train_op)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One training with both hooks on the same summary op; returns (store, run_id, tfevents)."""
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    base = tmp_path_factory.mktemp("diff")
    with tf.Graph().as_default():
        train_op = build_all_kinds(tf)
        op = tf.compat.v1.summary.merge_all()
        run = recorder.init(store=str(base / "store"), project="p", name="diff",
                            config={"lr": 0.05, "nested": {"a": [1, 2]}}, tags=["t1"],
                            notes="n")
        saver = tf.compat.v1.train.SummarySaverHook(save_steps=K, output_dir=str(base / "tb"),
                                                    summary_op=op)
        train(tf, [saver, recorder.SummaryHook(summary_op=op, steps_per_log=K)],
              train_op=train_op)
        recorder.finish()
    store = Store.open(str(base / "store"))
    return store, run.run_id, read_tfevents(str(base / "tb"))


def by_key(table):
    return {(r["step"], r["tag"], r.get("index", 0) or 0): r for r in table.to_pylist()}


def test_every_step_is_logged_once_with_its_exact_label(recorded):
    store, run_id, events = recorded
    t = store.scalars(run_id).filter(__import__("pyarrow").compute.equal(
        store.scalars(run_id)["tag"], "loss"))
    assert t["step"].to_pylist() == list(range(STEPS))
    assert sorted(s for s, tag in events if tag == "loss") == list(range(1, STEPS + 1))


def test_every_scalar_in_tfevents_is_in_the_store(recorded):
    store, run_id, events = recorded
    rows = by_key(store.scalars(run_id))
    scalars = [(s, tag, v) for (s, tag), (_w, v) in events.items()
               if v.WhichOneof("value") == "simple_value"]
    assert len(scalars) == STEPS * 4   # loss, nan, inf and the odd-Unicode tag
    for step, tag, v in scalars:
        got = rows[(step - 1, tag, 0)]["value"]
        if math.isnan(v.simple_value):
            assert math.isnan(got)
        else:
            assert got == v.simple_value, (step, tag)
    assert {tag for _s, tag, _v in scalars} <= {t for _s, t, _i in rows}
    assert any(math.isinf(r["value"]) for r in rows.values())
    assert rows[(0, ODD_TAG, 0)]["value"] == 2.5


def test_histograms_have_the_same_buckets(recorded):
    store, run_id, events = recorded
    rows = by_key(store.histograms(run_id))
    histos = [(s, tag, v.histo) for (s, tag), (_w, v) in events.items()
              if v.WhichOneof("value") == "histo"]
    assert len(histos) == 2 * STEPS
    for step, tag, h in histos:
        r = rows[(step - 1, tag, 0)]
        assert r["bucket_limits"] == list(h.bucket_limit)
        assert r["bucket_counts"] == list(h.bucket)
        assert (r["num"], r["min"], r["max"], r["sum"], r["sum_squares"]) == (
            h.num, h.min, h.max, h.sum, h.sum_squares)


def test_image_gif_and_audio_bytes_are_identical(recorded):
    store, run_id, events = recorded
    rows = by_key(store.media(run_id))
    seen = {"image/png": 0, "image/gif": 0, "audio/wav": 0}
    for (step, tag), (_w, v) in events.items():
        kind = v.WhichOneof("value")
        if kind == "image":
            r = rows[(step - 1, tag, 0)]
            assert r["data"] == v.image.encoded_image_string
            assert (r["width"], r["height"]) == (v.image.width, v.image.height)
            seen[r["content_type"]] += 1
        elif kind == "audio":
            r = rows[(step - 1, tag, 0)]
            assert r["data"] == v.audio.encoded_audio_string
            assert r["sample_rate"] == v.audio.sample_rate == 8000
            assert r["length_frames"] == v.audio.length_frames
            seen[r["content_type"]] += 1
    assert seen == {"image/png": 2 * STEPS, "image/gif": STEPS, "audio/wav": STEPS}


def test_text_is_identical(recorded):
    import tensorflow as tf
    store, run_id, events = recorded
    rows = by_key(store.media(run_id))
    texts = [(s, v) for (s, tag), (_w, v) in events.items() if tag == "note"]
    assert len(texts) == STEPS
    for step, v in texts:
        expected = tf.make_ndarray(v.tensor).item()
        r = rows[(step - 1, "note", 0)]
        assert r["kind"] == "text" and r["data"] == expected


def test_plugin_tensors_pr_curve_and_other_tensors(recorded):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2
    store, run_id, events = recorded
    scalars = by_key(store.scalars(run_id))
    assert scalars[(0, "v2scalar", 0)]["value"] == 1.25
    hist = by_key(store.histograms(run_id))[(0, "v2hist", 0)]
    assert hist["bucket_lefts"] == [0, 1] and hist["bucket_limits"] == [1, 2]
    assert hist["bucket_counts"] == [3, 5] and hist["num"] == 8 and hist["source"] == "tensor"
    curve = by_key(store.media(run_id))[(0, "curve", 0)]
    assert curve["kind"] == "pr_curve"
    assert json.loads(curve["data"])["recall"] == pytest.approx(np.linspace(0, 1, 18)[15:].tolist())
    tensors = by_key(store.tensors(run_id))
    for step in range(0, STEPS, K):
        r = tensors[(step, "matrix", 0)]
        assert r["dtype"] == "float32" and r["shape"] == [2, 3]
        expected = tf.make_ndarray(events[(step + 1, "matrix")][1].tensor)
        got = tf.make_ndarray(tensor_pb2.TensorProto.FromString(r["tensor"]))
        np.testing.assert_array_equal(got, expected)


def test_wall_time_is_when_the_step_ran(recorded):
    store, run_id, events = recorded
    rows = by_key(store.scalars(run_id))
    for (step, tag), (wall, _v) in events.items():
        if (step - 1, tag, 0) in rows:
            assert abs(rows[(step - 1, tag, 0)]["wall_time"] - wall) < 1.0


def test_run_record_keeps_config_tags_and_facts(recorded):
    store, run_id, _ = recorded
    r = store.run(run_id)
    assert r.config == {"lr": 0.05, "nested": {"a": [1, 2]}}
    assert r.tags == ["t1"] and r.notes == "n" and r.status == "finished" and r.exit_code == 0
    assert r.pid and r.host and r.python_version and r.tf_version
    assert r.command and r.started_at <= r.ended_at


@pytest.mark.parametrize("increment", ["optimizer", "assign_add", "assign"])
def test_several_hooks_with_different_ops_and_frequencies(graph, store_dir, increment):
    """Labels are the exact step each run began at. An optimizer's or assign_add's increment is
    ordered after the hook's read; a plain assign is not found, and the hook re-reads."""
    import tensorflow as tf
    step = tf.compat.v1.train.get_or_create_global_step()
    fed = tf.compat.v1.placeholder(tf.float32, [])   # the loop index: the step the run began at
    a = tf.compat.v1.summary.scalar("a", fed)
    b = tf.compat.v1.summary.scalar("b", fed * 10)
    if increment == "optimizer":
        w = tf.compat.v1.get_variable("w", initializer=2.0)
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(w * w,
                                                                             global_step=step)
    elif increment == "assign_add":
        train_op = tf.compat.v1.assign_add(step, 1)
    else:
        train_op = step.assign(step.read_value() + 1)
    run = recorder.init(store=store_dir)
    hooks = [recorder.SummaryHook(a, 2), recorder.SummaryHook(b, steps_per_log=5)]
    with tf.compat.v1.train.MonitoredTrainingSession(hooks=hooks) as sess:
        for i in range(40):
            sess.run(train_op, feed_dict={fed: i})
    recorder.finish()
    t = Store.open(store_dir).scalars(run.run_id)
    got = sorted(zip(t["tag"].to_pylist(), t["step"].to_pylist(), t["value"].to_pylist()))
    assert [x for x in got if x[0] == "a"] == [("a", s, float(s)) for s in range(0, 40, 2)]
    assert [x for x in got if x[0] == "b"] == [("b", s, 10.0 * s) for s in range(0, 40, 5)]


def test_graph_without_global_step_counts_runs(graph, store_dir):
    import tensorflow as tf
    v = tf.compat.v1.get_variable("v", initializer=0.0)
    tf.compat.v1.summary.scalar("v", v)
    train_op = tf.compat.v1.assign_add(v, 1.0)
    run = recorder.init(store=store_dir)
    with tf.compat.v1.train.MonitoredSession(hooks=[recorder.SummaryHook(steps_per_log=3)]) as s:
        for _ in range(7):
            s.run(train_op)
    recorder.finish()
    assert Store.open(store_dir).scalars(run.run_id)["step"].to_pylist() == [0, 3, 6]


def test_hook_without_init_starts_a_run_in_the_env_store(graph, tmp_path, monkeypatch):
    import tensorflow as tf
    monkeypatch.setenv("TFBLACKBOX_STORE", str(tmp_path / "envstore"))
    step = tf.compat.v1.train.get_or_create_global_step()
    tf.compat.v1.summary.scalar("s", tf.cast(step, tf.float32))
    train(tf, [recorder.SummaryHook(steps_per_log=1)], steps=3,
          train_op=tf.compat.v1.assign_add(step, 1))
    recorder.finish()
    store = Store.open(str(tmp_path / "envstore"))
    [r] = store.runs()
    assert store.scalars(r.run_id)["step"].to_pylist() == [0, 1, 2]


@pytest.mark.parametrize("use_resource", [True, False])
def test_step_read_is_ordered_before_the_increment(graph, use_resource):
    """The read the hooks fetch gives the step each run began at, in every run, for resource
    and legacy ref variables; the read that SummarySaverHook and WandbHook fetch races with the
    increment (wrong in some runs here)."""
    import tensorflow as tf
    from tfblackbox.recorder.tf1.global_step import step_before_run
    step = tf.compat.v1.Variable(0, trainable=False, name="global_step", dtype=tf.int64,
                                 use_resource=use_resource,
                                 collections=[tf.compat.v1.GraphKeys.GLOBAL_VARIABLES,
                                              tf.compat.v1.GraphKeys.GLOBAL_STEP])
    w = tf.compat.v1.get_variable("w", initializer=tf.ones([64, 64]), use_resource=use_resource)
    train_op = tf.compat.v1.train.GradientDescentOptimizer(1e-6).minimize(
        tf.reduce_sum(tf.matmul(w, w)), global_step=step)
    before, exact = step_before_run(tf)
    assert exact and step_before_run(tf) == (before, True)   # one read per graph, shared
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        seen = [sess.run([train_op, before])[1] for _ in range(300)]
    assert seen == list(range(300))


def test_a_finalized_graph_still_records_exact_steps(graph, store_dir):
    import tensorflow as tf
    step = tf.compat.v1.train.get_or_create_global_step()
    fed = tf.compat.v1.placeholder(tf.float32, [])
    tf.compat.v1.summary.scalar("a", fed)
    train_op = tf.compat.v1.assign_add(step, 1)
    op = tf.compat.v1.summary.merge_all()
    scaffold = tf.compat.v1.train.Scaffold()
    scaffold.finalize()                     # the graph is final before any hook's begin()
    run = recorder.init(store=store_dir)
    with tf.compat.v1.train.MonitoredSession(
            session_creator=tf.compat.v1.train.ChiefSessionCreator(scaffold=scaffold),
            hooks=[recorder.SummaryHook(op, steps_per_log=3)]) as sess:
        for i in range(10):
            sess.run(train_op, feed_dict={fed: i})
    recorder.finish()
    t = Store.open(store_dir).scalars(run.run_id)
    assert list(zip(t["step"].to_pylist(), t["value"].to_pylist())) == [
        (s, float(s)) for s in (0, 3, 6, 9)]


def _decoded(decode, data):
    from tfblackbox.schema.codecs.rows import ColumnBuffers
    buffers = ColumnBuffers(attempt=3)
    decode(data, 7, 1.5, buffers)
    return buffers.take()


def test_the_wire_fast_path_decodes_exactly_as_protobuf():
    """decode_summary reads scalars and `histo` histograms off the wire; every Summary here
    must give the very rows the protobuf path gives, including the ones it hands back to it."""
    import struct

    from tensorflow.core.framework import summary_pb2
    import summary_oracle
    from tfblackbox.schema.codecs import summary_decode
    s = summary_pb2.Summary()
    for tag, v in (("loss", 0.25), (ODD_TAG, float("nan")), ("inf", float("inf")),
                   ("neg0", -0.0)):
        s.value.add(tag=tag, simple_value=v)
    h = s.value.add(tag="w/hist").histo
    h.min, h.max, h.num, h.sum, h.sum_squares = -1.0, 2.0, 5.0, 3.0, 7.5
    h.bucket_limit.extend([-1.0, 0.0, 2.0])
    h.bucket.extend([1.0, 3.0, 1.0])
    s.value.add(tag="empty-histo").histo.SetInParent()
    meta = s.value.add(tag="with-metadata", simple_value=3.0)
    meta.metadata.plugin_data.plugin_name = "scalars"
    s.value.add(tag="img").image.encoded_image_string = b"\x89PNG..."
    s.value.add(tag="nothing")
    data = s.SerializeToString()
    # a histogram whose buckets are not packed (valid protobuf, not what TF writes)
    unpacked = b"\x0a\x03raw" + b"\x2a" + bytes([9 * 3]) + b"".join(
        bytes([0x31]) + struct.pack("<d", x) for x in (1.0, 2.0, 3.0))
    data += b"\x0a" + bytes([len(unpacked)]) + unpacked
    fast = _decoded(summary_decode.decode_summary, data)
    slow = _decoded(lambda d, *a: summary_oracle._decode_slow(d, *a, 0), data)
    assert sorted(fast) == sorted(slow) == ["histograms", "media", "scalars", "tensors"]
    for name in fast:
        assert fast[name].schema == slow[name].schema, name
        assert comparable_rows(fast[name]) == comparable_rows(slow[name]), name
    assert fast["scalars"]["tag"].to_pylist() == ["loss", ODD_TAG, "inf", "neg0", "with-metadata"]
    assert fast["histograms"]["bucket_limits"].to_pylist()[0] == [-1.0, 0.0, 2.0]
    assert fast["histograms"]["bucket_limits"].to_pylist()[2] == [1.0, 2.0, 3.0]
    # a Summary that is not a run of values falls back whole, from where it stops
    odd = data + b"\x12\x00"
    odd_rows = _decoded(summary_decode.decode_summary, odd)["scalars"]
    assert comparable_rows(odd_rows) == comparable_rows(slow["scalars"])


def test_a_tag_that_is_not_utf8_loses_nothing(graph, store_dir, caplog):
    """One value with a non-UTF-8 tag (C++ writers can emit one; Python protobuf refuses to
    parse it): it is kept under its tag with the bad bytes escaped, with a warning, and the
    Summary's other values are all recorded."""
    import logging

    import tensorflow as tf

    from tensorflow.core.framework import summary_pb2
    from tfblackbox import recorder
    from tfblackbox.schema import Store
    good = summary_pb2.Summary()
    good.value.add(tag="before", simple_value=1.0)
    h = good.value.add(tag="hist").histo
    h.bucket_limit.extend([0.0, 1.0])
    h.bucket.extend([2.0, 3.0])
    bad_scalar = b"\x0a\x07loss\xff\xfe!" + b"\x15" + struct.pack("<f", 2.5)
    bad_image = (b"\x0a\x04im\xc3\x28" + b"\x22\x08" + b"\x08\x01\x10\x01\x22\x02ab")
    after = summary_pb2.Summary()
    after.value.add(tag="after", simple_value=3.0)
    data = (good.SerializeToString() + b"\x0a" + bytes([len(bad_scalar)]) + bad_scalar +
            b"\x0a" + bytes([len(bad_image)]) + bad_image + after.SerializeToString())
    step = tf.compat.v1.train.get_or_create_global_step()
    train = tf.compat.v1.assign_add(step, 1)
    run = recorder.init(store=store_dir)
    hook = recorder.SummaryHook(summary_op=tf.constant(data), steps_per_log=1)
    with caplog.at_level(logging.WARNING, logger="tfblackbox"):
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
            sess.run(train)
        recorder.finish()
    s = Store.open(store_dir)
    assert s.scalars(run.run_id)["tag"].to_pylist() == ["before", "loss\\xff\\xfe!", "after"]
    assert s.scalars(run.run_id)["value"].to_pylist() == [1.0, 2.5, 3.0]
    assert s.histograms(run.run_id)["tag"].to_pylist() == ["hist"]
    media = s.media(run.run_id)
    assert media["tag"].to_pylist() == ["im\\xc3("] and media["data"].to_pylist() == [b"ab"]
    assert "not UTF-8" in caplog.text and "loss\\xff" in caplog.text


def test_bytes_that_are_no_summary_are_kept_raw(graph, store_dir, caplog):
    import logging

    import tensorflow as tf

    from tfblackbox import recorder
    from tfblackbox.schema import Store
    step = tf.compat.v1.train.get_or_create_global_step()
    train = tf.compat.v1.assign_add(step, 1)
    junk = b"\xff\xff\xff not a summary at all"
    run = recorder.init(store=store_dir)
    with caplog.at_level(logging.WARNING, logger="tfblackbox"):
        with tf.compat.v1.train.MonitoredSession(hooks=[
                recorder.SummaryHook(summary_op=tf.constant(junk), steps_per_log=1)]) as sess:
            sess.run(train)
        # reported as a writer error, once: on the next call into the writer after it was
        # decoded (the hook's last submit at the session's end, logged as the training goes
        # on) or, if the writer was not there yet, by flush(); the bytes are kept either way
        try:
            recorder.flush()
            raised = None
        except WriterError as e:
            raised = str(e)
        recorder.finish()           # finish() never raises: it logs the error
    reported = [r.getMessage() for r in caplog.records if "(training goes on)" in
                r.getMessage()]
    assert len(reported) + (raised is not None) == 1, (reported, raised)
    assert re.search("do not parse.*kept as a tensors row", raised or reported[0])
    t = Store.open(store_dir).tensors(run.run_id)
    assert t["plugin_name"].to_pylist() == ["tfblackbox/undecodable"] * t.num_rows
    assert t["plugin_content"].to_pylist() == [junk]
    assert "kept as a tensors row" in caplog.text


def test_no_tensorflow_warning_about_the_recorder_in_a_users_log(graph, store_dir, tmp_path,
                                                                caplog, capfd):
    """With a checkpoint_dir, MonitoredTrainingSession saves the MetaGraph; nothing of the
    recorder may be in it or cause a warning (a Python bool in a graph collection made TF
    log "Issue encountered when serializing tfblackbox_step_before_run_exact")."""
    import logging

    import tensorflow as tf

    from tfblackbox import recorder
    step = tf.compat.v1.train.get_or_create_global_step()
    tf.compat.v1.summary.scalar("x", tf.cast(step, tf.float32))
    train = tf.compat.v1.assign_add(step, 1)
    recorder.init(store=store_dir)
    with caplog.at_level(logging.INFO):
        with tf.compat.v1.train.MonitoredTrainingSession(
                checkpoint_dir=str(tmp_path / "ckpt"), save_checkpoint_steps=2,
                hooks=[recorder.SummaryHook(steps_per_log=1)]) as sess:
            for _ in range(5):
                sess.run(train)
        recorder.finish()
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "serializing" not in logged and "tfblackbox" not in logged, logged[-2000:]
    assert not [k for k in graph.get_all_collection_keys() if "tfblackbox" in k]
