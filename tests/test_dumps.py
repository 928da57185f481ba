"""DumpHook, `replay --to debug-dump` and `import-dumps`, judged by tfdbg's own DebugDumpDir.

The differential: the same deterministic graph and feeds run once under tfdbg's DumpingDebugHook
alone and once under DumpHook; every rebuilt session.run dir must load with validate=True and
hold the same watch keys and tensor values as DumpingDebugHook's, and none of the recorder's
own nodes (its global-step read).
"""

import glob
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from file_trees import files_under
from tfblackbox.cli.main import main as cli

N_STEPS = 7   # from the fifth step on, the dump codec repeats the last run's layout


def build_graph(tf):
    """Floats, float16, int64, bool, strings, scalars, a while loop, a cond, resource handles
    and a ref variable initialised inside the run (dumped uninitialised on the first run)."""
    step = tf.compat.v1.train.get_or_create_global_step()
    x = tf.compat.v1.placeholder(tf.float32, [3], name="x")
    w = tf.compat.v1.get_variable("w", initializer=tf.constant([3.0, -2.0, 0.5]))
    half = tf.cast(x * w, tf.float16, name="half")
    count = tf.cast(tf.reduce_sum(tf.cast(x > 0, tf.int64)), tf.int64, name="count")
    positive = tf.reduce_any(x > 1.0, name="positive")
    words = tf.strings.join([tf.constant(["a", "b"]), tf.strings.as_string(count)], name="words")
    i0 = tf.constant(0, name="i0")
    _, acc = tf.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a * 1.5),
                           [i0, tf.reduce_sum(x)], name="loop")
    branch = tf.cond(positive, lambda: acc * 2.0, lambda: acc - 1.0, name="branch")
    ref = tf.compat.v1.Variable(7.0, use_resource=False, collections=[], name="ref")
    loss = tf.add(tf.reduce_sum(w * w * x), branch * 0.0 + tf.cast(tf.reduce_sum(half),
                  tf.float32) * 0.0, name="loss")
    minimize = tf.compat.v1.train.GradientDescentOptimizer(0.05).minimize(loss, global_step=step)
    return x, [tf.group(minimize, ref.initializer, name="train"), words, count, half, branch,
               positive]


def feeds(i):
    return np.array([1.5 - i, 2.0 * i, -0.25 + i], np.float32)


def _train(tf, hooks, steps=N_STEPS):
    x, train = build_graph(tf)
    with tf.compat.v1.train.MonitoredSession(hooks=hooks) as sess:
        for i in range(steps):
            sess.run(train, feed_dict={x: feeds(i)})


def record_reference(tmp, watch_fn=None, name="tfdbg"):
    import tensorflow as tf
    from tensorflow.python.debug.wrappers.hooks import DumpingDebugHook
    root = str(tmp / name)
    with tf.Graph().as_default():
        _train(tf, [DumpingDebugHook(root, watch_fn=watch_fn)])
    return root


def record_blackbox(tmp, name="bbx", n_steps=N_STEPS, **hook_kw):
    import tensorflow as tf
    from tfblackbox import recorder
    store = str(tmp / name)
    run = recorder.init(store=store)
    hook = recorder.DumpHook(**hook_kw)
    with tf.Graph().as_default():
        _train(tf, [hook], n_steps)
    recorder.finish()
    return store, run.run_id, hook


def replay(store, out, *extra):
    return cli(["replay", "--store", store, "--to", "debug-dump", "--out", str(out), *extra])


def run_dirs(root):
    return sorted(glob.glob(os.path.join(root, "run_*")),
                  key=lambda p: tuple(int(x) for x in os.path.basename(p).split("_")[1:]))


def load(path):
    from tensorflow.python.debug.lib import debug_data
    return debug_data.DebugDumpDir(path, validate=True)


def values(dump):
    """{watch key: [value per dump, in time order]}, with uninitialised / resource tensors
    as markers."""
    from tensorflow.python.debug.lib import debug_data
    out = {}
    for datum in dump.dumped_tensor_data:
        v = datum.get_tensor()
        if isinstance(v, debug_data.InconvertibleTensorProto):
            v = ("inconvertible", v.initialized, v._tensor_proto.dtype)
        out.setdefault(datum.watch_key, []).append(v)
    return out


def assert_same(ref, got):
    assert sorted(ref) == sorted(got)
    for key in ref:
        a, b = ref[key], got[key]
        assert len(a) == len(b), key
        if "global_step/" in key:   # the step read races the increment, in TF itself
            continue
        for u, v in zip(a, b):
            if isinstance(u, tuple):
                assert u == v, key
            else:
                assert u.dtype == v.dtype and u.shape == v.shape, key
                np.testing.assert_array_equal(u, v, err_msg=key)


@pytest.fixture(scope="module", params=["memory", "files"])
def identity_dumps(tmp_path_factory, request):
    """Both captures: in memory (the compiled callback; this machine has a compiler, so it
    must be available) and through files (its fallback)."""
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    from tfblackbox.schema.codecs import tfdbg_v1_codec
    tmp = tmp_path_factory.mktemp("identity")
    ref = record_reference(tmp)
    repeat, repeated = tfdbg_v1_codec.Encoder._repeat, []

    def counted(self, *args):
        took = repeat(self, *args)
        repeated.append(took)
        return took
    tfdbg_v1_codec.Encoder._repeat = counted
    try:
        store, run_id, hook = record_blackbox(tmp, capture=request.param)
    finally:
        tfdbg_v1_codec.Encoder._repeat = repeat
    assert hook.capture == request.param
    # in memory, the later steps go through the codec's repeat of the last layout (their
    # content spans known) and the compiled parse's RecordSlices, and are compared below
    assert any(repeated) == (request.param == "memory"), repeated
    out = tmp / "out"
    assert replay(store, out) == 0
    return ref, store, run_id, str(out)


def test_differential_against_dumping_debug_hook(identity_dumps):
    ref, _store, _run_id, out = identity_dumps
    ref_dirs, got_dirs = run_dirs(ref), run_dirs(out)
    assert len(ref_dirs) == len(got_dirs) == N_STEPS
    kinds = set()
    for step, (r, g) in enumerate(zip(ref_dirs, got_dirs)):
        rd, gd = load(r), load(g)
        assert gd.core_metadata.global_step == step        # tfdbg says 0 here
        assert gd.run_fetches_info == rd.run_fetches_info
        assert gd.run_feed_keys_info == rd.run_feed_keys_info
        assert gd.devices() == rd.devices()
        rv, gv = values(rd), values(gd)
        assert_same(rv, gv)
        assert not [n for n in gd.nodes() if "tfblackbox" in n]     # the recorder's own nodes
        assert "tfblackbox" not in str(gd.core_metadata.output_names)
        for vs in gv.values():
            v = vs[0]
            kinds.add(v[0] if isinstance(v, tuple) and not v[1] else
                      "resource" if isinstance(v, tuple) else (v.dtype.kind, v.ndim == 0))
            if isinstance(v, tuple) and not v[1]:
                kinds.add("uninitialized")
    assert {("f", False), ("f", True), ("i", True), ("b", True), "resource"} <= kinds
    assert ("O", False) in kinds or ("S", False) in kinds      # strings
    first = values(load(got_dirs[0]))
    assert any(isinstance(v[0], tuple) and not v[0][1] for v in first.values()), "uninitialized"
    loop = [k for k in values(load(got_dirs[0])) if k.startswith("loop/")]
    assert any(len(values(load(got_dirs[0]))[k]) == 3 for k in loop)    # iterations
    assert any(k.startswith("branch/") for k in first)


def test_graphs_stored_once_and_steps(identity_dumps):
    from tfblackbox.schema import Store
    _ref, store, run_id, _out = identity_dumps
    s = Store.open(store)
    graphs = s.read(run_id, "tfdbg_v1_graphs")
    assert graphs.num_rows == 1                        # one device, one graph, 4 steps
    runs = s.read(run_id, "tfdbg_v1_runs")
    assert runs["step"].to_pylist() == list(range(N_STEPS))
    tensors = s.read(run_id, "tfdbg_v1_tensors", columns=["dtype", "shape", "tag", "codec"])
    assert "float16" in tensors["dtype"].to_pylist() and "string" in tensors["dtype"].to_pylist()
    # store format 3: numeric contents encoded (the differential above reads them back),
    # string tensors kept whole
    codecs = tensors["codec"].to_pylist()
    assert {"w4o0", "w4o1", "w4o2", "w4o3"} <= set(codecs)
    assert all(c is None for c, d in zip(codecs, tensors["dtype"].to_pylist()) if d == "string")


def test_offline_analyzer_opens_a_rebuilt_dir(identity_dumps):
    _ref, _store, _run_id, out = identity_dumps
    proc = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.debug.cli.offline_analyzer",
         "--dump_dir", run_dirs(out)[1], "--ui_type", "readline"],
        input="lt -n loss\nexit\n", capture_output=True, text=True, timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loss" in proc.stdout and "Error" not in proc.stdout


def test_import_dumps_round_trip(identity_dumps, tmp_path):
    ref, _store, _run_id, _out = identity_dumps
    store = str(tmp_path / "imported")
    assert cli(["import-dumps", ref, "--store", store, "--run", "old"]) == 0
    out = tmp_path / "back"
    assert replay(store, out, "--run", "old") == 0
    assert files_under(ref) == files_under(str(out))


def test_numeric_summary(tmp_path):
    import tensorflow as tf
    from tensorflow.python.debug.wrappers.framework import WatchOptions
    tf.compat.v1.disable_eager_execution()

    def watch(fetches, feeds):
        return WatchOptions(debug_ops=["DebugNumericSummary"],
                            tensor_dtype_regex_allowlist="^float32$",
                            tolerate_debug_op_creation_failures=True)
    ref = record_reference(tmp_path, watch_fn=watch)
    store, _run_id, _hook = record_blackbox(tmp_path, watch_fn=watch)
    assert replay(store, tmp_path / "out") == 0
    got = run_dirs(str(tmp_path / "out"))
    assert len(got) == N_STEPS
    for r, g in zip(run_dirs(ref), got):
        rv, gv = values(load(r)), values(load(g))
        assert all(k.endswith(":DebugNumericSummary") for k in gv) and gv
        for key in rv:   # element 0 is "initialized", the rest counts and moments
            np.testing.assert_array_equal(rv[key][0][:12], gv[key][0][:12], err_msg=key)
        assert sorted(rv) == sorted(gv)


def test_every_n_step_ranges_and_filters(tmp_path):
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    store, _run_id, hook = record_blackbox(tmp_path, n_steps=12, every_n_steps=3, steps=[(0, 10)])
    out = tmp_path / "out"
    assert replay(store, out) == 0
    assert [load(d).core_metadata.global_step for d in run_dirs(str(out))] == [0, 3, 6, 9]
    part = tmp_path / "part"
    assert replay(store, part, "--steps", "3:7", "--node", "^(positive|w)$") == 0
    dirs = run_dirs(str(part))
    assert [load(d).core_metadata.global_step for d in dirs] == [3, 6]
    assert {d.node_name for d in load(dirs[0]).dumped_tensor_data} == {"positive", "w"}
    # a non-empty --out is refused unless --force
    assert replay(store, part) == 2
    assert replay(store, part, "--force") == 0
    assert len(run_dirs(str(part))) == 4


def test_max_bytes_stops_dumping_training_goes_on(tmp_path, caplog):
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    from tfblackbox.schema import Store
    _s, run_id, hook = record_blackbox(tmp_path, n_steps=3, name="probe")
    one_step = Store.open(_s).read(run_id, "tfdbg_v1_runs")["tensor_bytes"].to_pylist()[0]
    with caplog.at_level("WARNING", logger="tfblackbox"):
        store, run_id, hook = record_blackbox(tmp_path, n_steps=10, max_bytes=int(3.5 * one_step),
                                              max_pending=1)
    assert hook.budget_exhausted and "disk budget" in caplog.text
    runs = Store.open(store).read(run_id, "tfdbg_v1_runs")
    assert 1 <= runs.num_rows < 10
    assert sum(runs["tensor_bytes"].to_pylist()) <= int(3.5 * one_step)


def test_unsafe_node_names_never_leave_out(tmp_path):
    import pyarrow as pa
    from tfblackbox.schema import TFDBG_V1_RUNS, TFDBG_V1_TENSORS, Store
    store = Store.create(str(tmp_path / "store"))
    store.create_run("evil")
    w, attempt = store.begin_attempt("evil")
    base = dict(step=0, wall_time=1.0, attempt=attempt, run_key="run_1_0")
    store.write_segment("evil", "tfdbg_v1_runs", pa.Table.from_pylist([dict(
        base, tag="run_1_0", devices=["/job:localhost/replica:0/task:0/device:CPU:0"])],
        schema=TFDBG_V1_RUNS), w)
    names = ["../../escape", "/abs/olute", "a/../../b", "ok/node", "a//b", ".", "x\x00y"]
    store.write_segment("evil", "tfdbg_v1_tensors", pa.Table.from_pylist([dict(
        base, tag=n, device="/job:localhost/replica:0/task:0/device:CPU:0", node_name=n,
        output_slot=0, debug_op="DebugIdentity", timestamp=5, event=b"") for n in names],
        schema=TFDBG_V1_TENSORS), w)
    out = tmp_path / "deep" / "out"
    assert replay(store.root, out) == 1                 # refused names are reported
    written = [os.path.relpath(os.path.join(d, f), tmp_path) for d, _s, fs in
               os.walk(tmp_path) for f in fs if "store" not in d]
    assert written == [os.path.join("deep", "out", "run_1_0",
                                    "_tfdbg_device_,job_localhost,replica_0,task_0,device_CPU_0",
                                    "ok", "node_0_DebugIdentity_5")]


KILL_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    from tfblackbox import recorder
    tf.compat.v1.disable_eager_execution()
    recorder.init(store=sys.argv[1], run_id="killed", flush_secs=0.2)
    step = tf.compat.v1.train.get_or_create_global_step()
    w = tf.compat.v1.get_variable("w", [64, 64])
    train = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(
        tf.reduce_sum(tf.matmul(w, w)), global_step=step)
    with tf.compat.v1.train.MonitoredSession(hooks=[recorder.DumpHook()]) as sess:
        i = 0
        while True:
            sess.run(train)
            i += 1
            if i == 20:
                print("dumping", flush=True)
""")


def test_sigkill_mid_dump_leaves_a_valid_store(tmp_path):
    from tfblackbox.schema import Store, verify
    store = str(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, store], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        assert proc.stdout.readline().strip() == "dumping"
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    s = Store.open(store)
    assert verify(s).ok
    runs = s.read("killed", "tfdbg_v1_runs")
    assert runs.num_rows > 0
    out = tmp_path / "out"
    assert replay(store, out) == 0
    for d in run_dirs(str(out))[:3]:
        assert load(d).dumped_tensor_data


def test_native_capture_builds_events_byte_identical_to_tfs_files():
    """The self-test a fresh build must pass, run here too: every captured Event (float32,
    float16, int64, bool, string, empty, float64) equals TF's own dump file byte for byte."""
    import tensorflow as tf
    from tfblackbox.recorder.tf1 import native_capture
    native = native_capture.load(tf, "memory")
    assert native_capture.self_test(native.path) == 0


def test_the_rings_copy_checks_every_float_dtype_for_nan_and_inf_in_the_same_pass():
    """Black-box mode streams each tensor into its arena and checks it for NaN/Inf on the way
    (64-byte SSE2 blocks, then the tail): every float dtype, the bad value in a block or in
    the tail, the largest finite values not counted, integers with a float's bit pattern not
    counted. The second run takes the prebuilt records (the fast path); its copies, filled
    in, equal the first run's and TF's fetched values."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.debug.lib import debug_utils
    from tfblackbox.recorder.tf1 import native_capture
    from tfblackbox.recorder.tf1.blackbox import nonfinite
    native = native_capture.load(tf, "memory")
    key = f"tfbb-nan-test-{os.getpid()}"
    url = native.register(key, hold=True)

    def values(dtype, n, at=None, bad=np.inf):
        a = np.linspace(-3, 3, n).astype(dtype)
        if at is not None:
            a[at] = bad
        return a

    arrays = {
        "f32_block": values(np.float32, 1000, 500), "f32_tail": values(np.float32, 1000, 999,
                                                                          np.nan),
        "f32_ok": values(np.float32, 1000, 3, np.finfo(np.float32).max),
        "f64_block": values(np.float64, 300, 100, -np.inf),
        "f64_ok": values(np.float64, 300, 299, np.finfo(np.float64).max),
        "f16_block": values(np.float16, 1000, 700, np.nan),
        "f16_ok": values(np.float16, 1000, 0, np.finfo(np.float16).max),
        "c64_block": values(np.complex64, 100) + np.where(np.arange(100) == 50, np.nan,
                                                           0).astype(np.complex64) * 1j,
        "i32_ok": np.full(1000, 0x7f800000, np.int32),
    }
    with tf.Graph().as_default() as g:
        fetches = {name: tf.identity(tf.constant(a), name=name) for name, a in arrays.items()}
        fetches["bf16_block"] = tf.cast(tf.constant(values(np.float32, 1000, 10)), tf.bfloat16,
                                        name="bf16_block")
        options = config_pb2.RunOptions()
        debug_utils.watch_graph(options, g, debug_urls=[url])
        with tf.compat.v1.Session(graph=g) as sess:
            takes = []
            for _ in range(2):   # the first builds each watch's record, the second reuses it
                fetched = sess.run(fetches, options=options)
                takes.append(native.take(key))
    native.close(key)
    for records, failed, counted in takes:
        tensors = native_capture.parse_records(records.fill().view)
        bad = {t.node_name for t in tensors if t.debug_op == "DebugIdentity" and nonfinite(t)}
        # (grappler folds the constants into the fetched nodes: those are what TF watches)
        assert bad == {"f32_block", "f32_tail", "f64_block", "f16_block", "c64_block",
                       "bf16_block"}
        assert failed == 0 and counted == len(bad)
    first, second = ([(t.node_name, bytes(t.data)) for t in native_capture.parse_records(
        r.view)] for r, _f, _c in takes)
    # the same Events but for their wall times (bytes 1..8 of each Event)
    assert [(n, d[:1] + d[9:]) for n, d in first] == [(n, d[:1] + d[9:]) for n, d in second]
    mine = {t.node_name: t for t in native_capture.parse_records(takes[1][0].view)}
    for name, value in fetched.items():
        start, end = mine[name].content
        assert bytes(mine[name].data[start:end]) == np.asarray(value).tobytes(), name


def _record(blob, ts, node, slot=0, op="DebugIdentity", dtype=1, dims=(2,),
            device="/job:localhost/replica:0/task:0/device:CPU:0", event=b"\x09evt"):
    import struct
    strings = device.encode() + node.encode() + op.encode() + event
    body = struct.pack("<QiiIIIIIII", ts, slot, dtype, len(dims), len(device.encode()),
                       len(node.encode()), len(op.encode()), len(event), 0, 0)
    body += struct.pack(f"<{len(dims)}q", *dims) + strings
    return blob + struct.pack("<I", len(body)) + body


def test_capture_records_parse_with_tfs_name_collision_suffixes():
    from tfblackbox.recorder.tf1.native_capture import parse_records
    from tfblackbox.schema.errors import DumpLayoutError
    blob = b""
    for node in ("loop/mul", "loop/mul", "loop/mul", "loop/add"):   # same microsecond
        blob = _record(blob, 1700000000000001, node)
    blob = _record(blob, 1700000000000002, "loop/mul", slot=1, dtype=7, dims=())
    got = parse_records(memoryview(blob))
    assert [t.ext_timestamp for t in got] == [
        "1700000000000001", "1700000000000001-1", "1700000000000001-2", "1700000000000001",
        "1700000000000002"]
    assert got[0].device_dir == "_tfdbg_device_,job_localhost,replica_0,task_0,device_CPU_0"
    assert (got[0].dtype, got[0].shape, got[4].dtype, got[4].shape) == (
        "float32", (2,), "string", ())
    assert got[1].data == b"\x09evt" and got[4].output_slot == 1
    with pytest.raises(DumpLayoutError, match="malformed"):
        parse_records(blob[:-3])


def _content_record(blob, ts, node, dtype, dims, event, cat, clen):
    """_record with a tensor content span (cat, clen) inside the Event."""
    import struct
    device, op = "/job:localhost/replica:0/task:0/device:CPU:0", "DebugIdentity"
    strings = device.encode() + node.encode() + op.encode() + event
    body = struct.pack("<QiiIIIIIII", ts, 0, dtype, len(dims), len(device), len(node.encode()),
                       len(op), len(event), cat, clen)
    body += struct.pack(f"<{len(dims)}q", *dims) + strings
    return blob + struct.pack("<I", len(body)) + body


def test_the_compiled_capture_parse_makes_what_the_python_one_makes(monkeypatch):
    """Same TensorFile objects field for field: names it has not seen (Python learns them),
    repeats in one take (collision suffixes across both paths), content spans, dtypes outside
    TF's enum; and the same errors for damage, wherever it sits."""
    from tfblackbox.recorder.tf1 import capture_records, native_capture
    from tfblackbox.schema.formats import native
    if not native.available():
        pytest.fail("the compiled extension is not built (pip install -e . with a C compiler)")
    blob = b""
    for step in range(3):
        for k in range(40):
            blob = _content_record(blob, 1700000000000000 + step, f"net/layer{k % 7}/w",
                                   (1, 2, 19, 9, 155, 119)[k % 6], (k % 3, 4, 1)[:k % 4],
                                   b"\x09" + bytes(range(k % 50)) + b"payload" * (k % 3),
                                   1, (k % 50) // 2)
    blob = _content_record(blob, 1700000000000009, "t\u00e4gged/\u00fc", 1, (), b"xy", 0, 0)

    def parse(pure, data):
        native_capture._NAMES.clear()
        if pure:
            monkeypatch.setenv("TFBLACKBOX_PURE_PYTHON", "1")
        else:
            monkeypatch.delenv("TFBLACKBOX_PURE_PYTHON", raising=False)
        try:
            return native_capture.parse_records(data)
        except Exception as e:   # DumpLayoutError; struct.error for a header cut short
            return f"{type(e).__name__}: {e}"

    compiled, pure = parse(False, memoryview(blob)), parse(True, memoryview(blob))
    assert len(compiled) == 121 and compiled == pure
    parse(False, blob)   # the names learned: the compiled loop takes records up to dtype 155
    taken = []
    stop = native.module().capture_records(memoryview(blob), 0, native_capture._NAMES,
                                           native_capture._DTYPES,
                                           capture_records.layout.TensorFile, taken, {})
    assert len(taken) == 4 and taken == compiled[:4] and 0 < stop < len(blob)
    assert all(type(t.data) is native.module().RecordSlice for t in taken)
    # the compiled loop's TensorFiles are left out of the cycle collector (no full collections
    # set off by a step's worth of them); they still go when the last reference does
    import gc
    import weakref
    assert not any(gc.is_tracked(t) or gc.is_tracked(t.data) for t in taken)
    assert all(gc.is_tracked(t) for t in pure[-1:])
    gone = weakref.ref(taken[0].data)   # a slice only the TensorFile refers to
    del taken[:]
    assert gone() is None
    assert {t.ext_timestamp for t in compiled} >= {"1700000000000000", "1700000000000000-5"}
    assert {t.dtype for t in compiled} >= {"float32", "dtype55_ref", "float16_ref"}
    assert compiled[-1].node_name == "t\u00e4gged/\u00fc"
    for cut in (3, 40, len(blob) // 2 + 1):   # a record cut short, at the end
        assert parse(False, blob[:-cut]) == parse(True, blob[:-cut])
    bad = _content_record(blob, 1, "n", 1, (), b"abc", 2, 5)   # content past its Event
    assert parse(False, bad) == parse(True, bad)
    assert "lies outside its 3-byte Event" in parse(False, bad)


def test_a_record_slice_reads_as_the_bytes_it_views_and_keeps_them_alive():
    """capture_records' data (a RecordSlice, left out of the cycle collector) do what the
    ingest asks of a memoryview slice, read-only, and outlive the take's memoryview."""
    import gc
    import struct
    import weakref

    from tfblackbox.recorder.tf1 import capture_records
    from tfblackbox.schema.formats import native
    if not native.available():
        pytest.fail("the compiled extension is not built (pip install -e . with a C compiler)")
    blob = _content_record(b"", 1, "n", 1, (3,), b"\x08\x01abcdefgh", 2, 4) * 2
    view = memoryview(bytearray(blob))
    capture_records._parse_one(view, 0, len(view), [], {})   # learns the record's names
    out = []
    native.module().capture_records(view, 0, capture_records._NAMES, capture_records._DTYPES,
                                    capture_records.layout.TensorFile, out, {})
    data = [t.data for t in out]
    event = b"\x08\x01abcdefgh"
    assert len(data) == 2 and all(type(d).__name__ == "RecordSlice" for d in data)
    d = data[1]
    assert not gc.is_tracked(d) and len(d) == len(event) and d == event and d != event[:-1]
    assert d == memoryview(event) and memoryview(event) == d and d == data[0] and d != "x"
    assert None not in data and 8 not in data     # compared with what is not bytes: unequal
    assert bytes(d) == d.tobytes() == event and d[0] == 8 and d[-1] == ord("h")
    assert d[2:5] == b"abc" and isinstance(d[2:5], memoryview) and list(d)[:3] == [8, 1, 97]
    assert b"".join((d[:2], d[4:])) == b"\x08\x01cdefgh"
    assert struct.unpack_from("<B", d, 1) == (1,) and np.frombuffer(d, np.uint8)[2] == 97
    with pytest.raises(IndexError):
        d[len(event)]
    with pytest.raises(TypeError):
        memoryview(d)[0] = 0                      # read-only
    with pytest.raises(TypeError):
        hash(d)
    view.release()                                # the take's own memoryview goes
    assert d == event and bytes(data[0]) == event  # the slices still hold the memory
    gone = weakref.ref(d)
    del data, d, out
    assert gone() is None


def test_a_taken_buffer_goes_back_to_the_capture_only_once_no_tensor_refers_to_it():
    """parse_records' data are slices of the capture's buffer, not copies: release() must not
    let the capture write the next run into it while a tensor still refers to it."""
    import gc

    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.debug.lib import debug_utils
    from tfblackbox.recorder.tf1 import native_capture
    nat = native_capture.load(tf, "memory")
    url = nat.register("tfblackbox-test-lifetime")
    g = tf.Graph()
    with g.as_default():
        feed = tf.compat.v1.placeholder(tf.float32, [256])
        out = tf.identity(feed * 2.0, name="doubled")
    options = config_pb2.RunOptions()
    debug_utils.watch_graph(options, g, debug_urls=[url])
    with tf.compat.v1.Session(graph=g) as sess:
        sess.run(out, {feed: np.full(256, 1.0, np.float32)}, options=options)
        records, _f, _n = nat.take("tfblackbox-test-lifetime")
        native_capture.parse_records(records.view)   # learns the names: the compiled loop
        tensors = native_capture.parse_records(records.view)   # takes every record now
        assert tensors and all(type(t.data).__name__ == "RecordSlice" for t in tensors)
        before = [bytes(t.data) for t in tensors]
        records.release()
        assert not records.released            # the tensors still refer to it
        for i in range(4):                      # runs the capture writes while they live
            sess.run(out, {feed: np.full(256, 7.0 + i, np.float32)}, options=options)
            later, _f, _n = nat.take("tfblackbox-test-lifetime")
            assert bytes(later.view[:16]) and later.size > 0
            later.release()
            assert later.released                  # nothing refers to it: back at once
        assert [bytes(t.data) for t in tensors] == before
        del tensors
        gc.collect()
        assert records.released
    nat.close("tfblackbox-test-lifetime")


def test_a_held_take_copies_no_content_until_filled_and_then_equals_a_copied_one():
    """Black-box mode: the take keeps the content apart, in the capture's arena (counted
    whole: its chunks); fill() puts it in, and the records are then the very bytes the copying
    capture makes (tensors of other kinds, strings here, are whole either way)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.debug.lib import debug_utils
    from tfblackbox.recorder.tf1 import native_capture
    nat = native_capture.load(tf, "memory")
    g = tf.Graph()
    with g.as_default():
        feed = tf.compat.v1.placeholder(tf.float32, [256])
        tf.identity(feed * 2.0, name="doubled")
        tf.constant(["a", "bc"], name="names")
    taken = {}
    for key, hold in (("tfblackbox-test-copied", False), ("tfblackbox-test-held", True)):
        url = nat.register(key, hold=hold)
        options = config_pb2.RunOptions()
        debug_utils.watch_graph(options, g, debug_urls=[url])
        with tf.compat.v1.Session(graph=g) as sess:
            for i in range(3):   # the third run's records come from prebuilt watches
                sess.run(["doubled:0", "names:0"], {feed: np.full(256, 1.0 + i, np.float32)},
                         options=options)
                records, _f, _n = nat.take(key)
                if i < 2:
                    records.release()              # a ring's step that no trigger wrote
                    assert records.released and records.view is None
        taken[hold] = records
    copied, held = taken[False], taken[True]
    assert copied.held == 0 and held.held >= 2 * 256 * 4 and held.view is None
    assert held.size >= copied.size and held.held % (64 << 10) == 0   # whole 64 kB chunks
    wall_free = [(t.node_name, t.debug_op, t.dtype, bytes(t.data[9:]))   # Event after wall time
                 for t in native_capture.parse_records(copied.view)]
    assert [(t.node_name, t.debug_op, t.dtype, bytes(t.data[9:]))
            for t in native_capture.parse_records(held.fill().view)] == wall_free
    assert held.held == 0 and held.size == copied.size and held.fill() is held
    assert {n for n, *_ in wall_free} >= {"doubled", "names"}
    for records in (copied, held):
        records.release()
        assert records.released
    unfilled, _f, _n = nat.take("tfblackbox-test-held")   # nothing ran since: no records
    assert unfilled is None
    for key in ("tfblackbox-test-copied", "tfblackbox-test-held"):
        nat.close(key)


def test_capture_falls_back_to_files_without_a_compiler(tmp_path, monkeypatch, caplog):
    import logging

    import tensorflow as tf
    from tfblackbox.recorder.tf1 import native_capture
    tf.compat.v1.disable_eager_execution()
    monkeypatch.setenv("TFBLACKBOX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(native_capture.NativeUnavailable, match="compiling capture.cc"):
        native_capture.load(tf, "memory")
    failed = glob.glob(str(tmp_path / "cache" / "capture-*.failed"))
    assert len(failed) == 1 and "no-such-compiler" in open(failed[0]).read()
    monkeypatch.setattr(native_capture, "_loaded", {})      # a new process: the marker speaks
    with caplog.at_level(logging.WARNING, logger="tfblackbox"):
        store, run_id, hook = record_blackbox(tmp_path, n_steps=2)
    assert hook.capture == "files"
    assert "captures through files" in caplog.text and "remove" in caplog.text
    from tfblackbox.schema import Store
    tensors = Store.open(store).read(run_id, "tfdbg_v1_tensors", columns=["step"])
    assert sorted(set(tensors["step"].to_pylist())) == [0, 1]
    from tfblackbox import recorder
    with pytest.raises(ValueError, match="capture='fast'"):
        recorder.DumpHook(capture="fast")


def test_an_unwritable_cache_dir_falls_back_never_raises_into_training(tmp_path, monkeypatch):
    import tensorflow as tf
    from tfblackbox.recorder.tf1 import native_capture
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TFBLACKBOX_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(native_capture.NativeUnavailable, match="NotADirectoryError|exists"):
        native_capture.load(tf, "memory")
    monkeypatch.setattr(native_capture, "_loaded", {})
    assert native_capture.load(tf, "auto") is None


def test_concurrent_threads_keep_their_own_dumps(tmp_path):
    """Two threads run the same MonitoredSession at once: each dumped run holds its own
    tensors (the in-memory capture has one key per thread), none lost, none mixed."""
    import threading

    import tensorflow as tf
    from tfblackbox import recorder
    tf.compat.v1.disable_eager_execution()
    store = str(tmp_path / "bbx")
    run = recorder.init(store=store)
    hook = recorder.DumpHook(capture="memory")
    fed = []
    with tf.Graph().as_default():
        x, train = build_graph(tf)
        train = train + [tf.identity(x, name="xcopy")]     # a fed placeholder is not dumped
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
            def work(t):
                for i in range(5):
                    value = np.array([t + 1.0, i + 1.0, 0.5], np.float32)
                    fed.append(value.tobytes())
                    sess.run(train, feed_dict={x: value})
            threads = [threading.Thread(target=work, args=(t,), name=f"w{t}") for t in (0, 1)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
    recorder.finish()
    assert hook.capture == "memory" and hook.skipped_busy == 0
    out = tmp_path / "out"
    assert replay(store, out) == 0
    dirs = run_dirs(str(out))
    assert len(dirs) == 10
    got, counts = [], set()
    for d in dirs:
        dump = load(d)
        xs = [datum.get_tensor() for datum in dump.dumped_tensor_data
              if datum.node_name == "xcopy"]
        assert len(xs) == 1, d                   # one run's tensors, not two runs' mixed
        got.append(xs[0].tobytes())
        counts.add(len(dump.dumped_tensor_data))
    assert sorted(got) == sorted(fed)
    assert len(counts) <= 2                      # the first run also dumps uninitialised state
    from tfblackbox.schema import Store
    runs = Store.open(store).read(run.run_id, "tfdbg_v1_runs", columns=["status"])
    assert set(runs["status"].to_pylist()) == {"ok"}


def test_tensors_the_capture_cannot_keep_are_counted_and_the_step_marked(tmp_path, caplog):
    """The callback's out-of-memory path (forced through the library's test switch): the
    training goes on, the step is recorded as 'incomplete' and the loss is logged."""
    import logging
    import threading

    import tensorflow as tf
    from tfblackbox import recorder
    from tfblackbox.schema import Store
    tf.compat.v1.disable_eager_execution()
    store = str(tmp_path / "bbx")
    run = recorder.init(store=store)
    hook = recorder.DumpHook(capture="memory")
    with caplog.at_level(logging.ERROR, logger="tfblackbox"), tf.Graph().as_default():
        x, train = build_graph(tf)
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
            for i in range(3):
                if i == 1:
                    key = hook._capture._mem_keys[threading.get_ident()]
                    hook._capture.native.fail_next(key, 5)
                sess.run(train, feed_dict={x: feeds(i)})
        recorder.finish()
    s = Store.open(store)
    runs = s.read(run.run_id, "tfdbg_v1_runs", columns=["step", "status", "tensor_count"])
    assert runs["status"].to_pylist() == ["ok", "incomplete", "ok"]
    counts = runs["tensor_count"].to_pylist()
    # Which 5 captures fail is thread timing: a failure on one of the recorder's own nodes
    # (never recorded) is not counted, so the count said is the tensors missing, 1 to 5
    said = re.search(r"(\d+) tensor\(s\) of step 1 could not be captured", caplog.text)
    assert said, caplog.text
    assert 1 <= int(said.group(1)) <= 5
    assert counts[1] == counts[2] - int(said.group(1))


def test_a_killed_builds_half_library_is_removed_by_the_next_build(tmp_path, monkeypatch):
    import tensorflow as tf
    from tfblackbox.recorder.tf1 import native_capture
    monkeypatch.setenv("TFBLACKBOX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))   # the build itself fails fast
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"capture-0123456789abcdef.so.{dead.pid}.tmp"
    alive = tmp_path / f"capture-0123456789abcdef.so.{os.getpid()}.tmp"
    stale.write_bytes(b"half")
    alive.write_bytes(b"in progress")
    with pytest.raises(native_capture.NativeUnavailable):
        native_capture.load(tf, "memory")
    assert not stale.exists() and alive.exists()


def test_a_rebuild_removes_what_a_killed_rebuild_left(identity_dumps, tmp_path):
    """A rebuild killed mid-way leaves a hidden half-built dir and, over an earlier rebuild, the
    previous dir moved aside (run_<...>.old-<pid>, which looks like a run dir); the next
    rebuild removes those of dead processes."""
    _ref, store, _run_id, _out = identity_dumps
    out = tmp_path / "again"
    assert replay(store, out) == 0
    first = run_dirs(str(out))[0]
    dead = 2 ** 22 + 12345          # above pid_max on this machine: never a live process
    os.makedirs(os.path.join(str(out), f".{os.path.basename(first)}.incomplete-{dead}", "x"))
    os.rename(first, f"{first}.old-{dead}")
    assert replay(store, out, "--force") == 0
    assert sorted(os.listdir(out)) == sorted(os.path.basename(d) for d in run_dirs(str(out)))
    assert len(run_dirs(str(out))) == N_STEPS
    load(run_dirs(str(out))[0])


def test_a_full_writer_queue_delays_the_ingest_never_drops_dumps(tmp_path):
    """A writer queue far smaller than one dumped run: the ingest (not the training thread)
    waits for the writer; every dumped step is recorded and rebuilds (before issue 16 the
    ingest dropped them under on_full='drop': at 253 watched tensors, 59 of 100 steps)."""
    import tensorflow as tf
    from tfblackbox import recorder
    from tfblackbox.schema import Store
    tf.compat.v1.disable_eager_execution()
    import threading
    store = str(tmp_path / "bbx")
    run = recorder.init(store=store, max_queue_bytes=4096, flush_secs=0.05)
    hook = recorder.DumpHook()
    gate = threading.Event()     # the writer is busy (a job waiting on it) while training runs
    assert run.submit(lambda buffers: gate.wait(60))
    threading.Timer(3.0, gate.set).start()
    with tf.Graph().as_default():
        _train(tf, [hook], 8)
    capture = hook._capture
    recorder.finish()
    assert capture is None or capture.jobs.runs_dropped == 0
    assert run.writer.dropped_jobs == 0 and hook.skipped_busy == 0
    runs = Store.open(store).read(run.run_id, "tfdbg_v1_runs", columns=["step"])
    assert runs["step"].to_pylist() == list(range(8))
    out = tmp_path / "out"
    assert replay(store, out) == 0
    assert len(run_dirs(str(out))) == 8 and all(load(d).dumped_tensor_data
                                                  for d in run_dirs(str(out)))
