"""The in-memory capture's fixed staging dir (recorder/tf1/metadata_staging.py): each sealed run
takes the core metadata and graphs TF published for it, and none of the next run's."""

import json
import os

import numpy as np

from tfblackbox.recorder.tf1 import metadata_staging
from tfblackbox.schema.formats import tfdbg_v1

DEV = "_tfdbg_device_,job_localhost,replica_0,task_0,device_CPU_0"


def _meta(index, micros, executor_step):
    msg = json.dumps({"global_step": 0, "session_run_index": index,
                      "executor_step_index": executor_step, "input_names": [],
                      "output_names": ["a:0"], "target_nodes": []}, separators=(",", ":"))
    return (f"_tfdbg_core_metadata_sessionrun{index:014d}_{micros}",
            tfdbg_v1.log_message_event(msg))


def _put(path, name, data):
    with open(os.path.join(path, name), "wb") as fh:
        fh.write(data)


def test_a_run_takes_its_own_metadata_and_graphs_and_leaves_the_next_runs(tmp_path):
    d = str(tmp_path)
    dev = os.path.join(d, DEV)
    os.makedirs(dev)
    for index, micros, step in ((4, 900, 0), (5, 1500, 0), (6, 2500, 0), (7, 3500, 1)):
        _put(d, *_meta(index, micros, step))
    for micros in (950, 1400, 2400):
        _put(dev, f"_tfdbg_graph_hash{micros}7_{micros}", b"graph %d" % micros)
    _put(d, "junk", b"?")

    got = metadata_staging.read_run(d, 1000, 2000)
    assert got.core_metadata_name == _meta(5, 1500, 0)[0]
    assert got.core_metadata == _meta(5, 1500, 0)[1]
    assert [(g.timestamp, g.data) for g in got.graphs] == [(1400, b"graph 1400")]
    assert got.device_dirs == [DEV]
    assert got.unknown == [os.path.join(d, "junk")]
    os.remove(os.path.join(d, "junk"))
    # the older run's leftovers went with it; the next runs' files are still there
    assert sorted(os.listdir(d)) == sorted([DEV, _meta(6, 2500, 0)[0], _meta(7, 3500, 1)[0]])
    assert os.listdir(dev) == ["_tfdbg_graph_hash24007_2400"]

    got = metadata_staging.read_run(d, 2100, 3000)
    assert got.core_metadata_name == _meta(6, 2500, 0)[0]
    assert [g.timestamp for g in got.graphs] == [2400]

    # an executor TF already had publishes no graph: its device dirs are not read
    _put(dev, "_tfdbg_graph_hash9_3400", b"not read")
    got = metadata_staging.read_run(d, 3100, 4000)
    assert got.core_metadata_name == _meta(7, 3500, 1)[0] and got.graphs == []
    assert os.listdir(dev) == ["_tfdbg_graph_hash9_3400"]
    assert os.listdir(d) == [DEV]


def test_a_run_without_metadata_takes_only_the_graphs_of_its_own_time(tmp_path):
    """A session.run that raised before TF published its metadata: the graphs its executor
    published are its own; a later run's are not, an earlier one's are dropped."""
    d = str(tmp_path)
    dev = os.path.join(d, DEV)
    os.makedirs(dev)
    for micros in (500, 1200, 2200):
        _put(dev, f"_tfdbg_graph_hash{micros}_{micros}", b"g")
    got = metadata_staging.read_run(d, 1000, 2000)
    assert got.core_metadata is None and got.core_metadata_name is None
    assert [g.timestamp for g in got.graphs] == [1200]
    assert os.listdir(dev) == ["_tfdbg_graph_hash2200_2200"]


def test_alternating_fetches_keep_each_runs_metadata_and_graphs_in_memory(tmp_path):
    """Two executors (the same graph, two sets of fetches) run in turn through the in-memory
    capture: each step's core metadata is its own run's (TF's counters in order, its own
    fetches), and each executor's partition graph is recorded when it was built."""
    import tensorflow as tf
    from tfblackbox import recorder
    from tfblackbox.schema import Store
    tf.compat.v1.disable_eager_execution()
    store = str(tmp_path / "s")
    run = recorder.init(store=store)
    hook = recorder.DumpHook(capture="memory")
    steps = 6
    with tf.Graph().as_default():
        step = tf.compat.v1.train.get_or_create_global_step()
        x = tf.compat.v1.placeholder(tf.float32, [3], name="x")
        doubled = tf.multiply(x, 2.0, name="doubled")
        tick = tf.compat.v1.assign_add(step, 1, name="tick")
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
            for i in range(steps):
                fetches = [tick] if i % 2 == 0 else [tick, doubled]
                sess.run(fetches, feed_dict={x: np.arange(3, dtype=np.float32) + i})
    recorder.finish()
    assert hook.capture == "memory"
    s = Store.open(store)
    runs = s.read(run.run_id, "tfdbg_v1_runs").to_pylist()
    assert [r["step"] for r in runs] == list(range(steps))
    metas = [json.loads(tfdbg_v1.log_message(r["core_metadata"])) for r in runs]
    assert [m["global_step"] for m in metas] == list(range(steps))
    indexes = [m["session_run_index"] for m in metas]
    assert indexes == sorted(set(indexes))
    assert [m["executor_step_index"] for m in metas] == [0, 0, 1, 1, 2, 2]
    assert [doubled.name in m["output_names"] for m in metas] == [False, True] * 3
    assert [len(m["output_names"]) for m in metas] == [1, 2] * 3
    for r, m in zip(runs, metas):
        assert r["core_metadata_name"] == (f"_tfdbg_core_metadata_sessionrun"
                                           f"{m['session_run_index']:014d}_"
                                           f"{r['core_metadata_name'].rsplit('_', 1)[1]}")
        assert len(r["graph_hashes"]) == 1
    graphs = s.read(run.run_id, "tfdbg_v1_graphs").to_pylist()
    assert [g["step"] for g in graphs] == [0, 1]
    assert len({g["graph_hash"] for g in graphs}) == 2
    assert runs[2]["graph_hashes"] == [graphs[0]["graph_hash"]]
    assert runs[3]["graph_hashes"] == [graphs[1]["graph_hash"]]


def test_executor_signatures_share_one_parse_per_fetch_set_and_match_the_full_parse():
    from tfblackbox.recorder.tf1.executor_graphs import ExecutorSignatures, executor_signature

    def meta(step, index, outputs):
        msg = json.dumps({"global_step": step, "session_run_index": index,
                          "executor_step_index": step, "input_names": ["x:0"],
                          "output_names": outputs, "target_nodes": ["train"]},
                         separators=(",", ":"))
        return tfdbg_v1.log_message_event(msg)

    sigs = ExecutorSignatures()
    a1, a2, b = meta(0, 5, ["a:0"]), meta(1, 9, ["a:0"]), meta(0, 6, ["a:0", "b:0"])
    for m in (a1, a2, b):
        assert sigs.of(m) == executor_signature(m)
    assert sigs.of(a1) == sigs.of(a2) != sigs.of(b)
    assert len(sigs._known) == 2                     # the counters are not part of the key
    assert sigs.of(None) is None and sigs.of(b"") is None
    odd = tfdbg_v1.log_message_event("not json")     # no names: parsed as it is, every time
    assert sigs.of(odd) == executor_signature(odd) and len(sigs._known) == 2
