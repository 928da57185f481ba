"""Black-box mode (DumpHook keep_last=K): with real TensorFlow, a graph whose `log` turns NaN at
a known step. The store must hold exactly the K dumped steps before a trigger and the trigger's
step, rebuilt dirs must load with tfdbg's DebugDumpDir(validate=True), and its
find(has_inf_or_nan) must name the node DumpingDebugHook's own dumps name; with no trigger
nothing is written."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfblackbox.cli.main import main as cli
from tfblackbox.schema import Store, verify

from test_dumps import assert_same, load, run_dirs, values

BAD_STEP, N_STEPS, K = 12, 20, 3


def build(tf, check_numerics=False):
    step = tf.compat.v1.train.get_or_create_global_step()
    x = tf.compat.v1.placeholder(tf.float32, [4], name="x")
    w = tf.compat.v1.get_variable("w", [4], initializer=tf.compat.v1.ones_initializer())
    y = tf.math.log(x * w, name="log")           # NaN once x turns negative
    if check_numerics:
        y = tf.debugging.check_numerics(y, "log went bad")
    loss = tf.reduce_mean(y * w, name="mean")    # not a unary op: grappler keeps `log`
    tf.compat.v1.summary.scalar("loss", loss)
    return x, [tf.compat.v1.assign_add(step, 1, name="train"), loss]


def feed(s, bad=None, spike=None):
    v = 2.0 + 0.01 * s
    if s == bad:
        v = -1.0
    if s == spike:
        v = 1e30                                    # loss = log(1e30), ~100x the usual
    return np.full(4, v, np.float32)


def train(tf, hooks, steps=N_STEPS, check_numerics=False, on_step=None, **feed_kw):
    x, fetches = build(tf, check_numerics)
    with tf.compat.v1.train.MonitoredSession(hooks=hooks) as sess:
        for s in range(steps):
            sess.run(fetches, {x: feed(s, **feed_kw)})
            if on_step:
                on_step(s)


def record(tmp_path, name="bb", steps=N_STEPS, check_numerics=False, on_step=None,
           feed_kw=None, **hook_kw):
    import tensorflow as tf
    from tfblackbox import recorder
    store = str(tmp_path / name)
    run = recorder.init(store=store, run_id=name)
    hook = recorder.DumpHook(**dict(dict(keep_last=K), **hook_kw))
    with tf.Graph().as_default():
        try:
            train(tf, [hook], steps, check_numerics, on_step, **(feed_kw or {}))
        except tf.errors.InvalidArgumentError as e:
            run.exit_error = e
            recorder.finish(exit_code=1)
    recorder.finish()
    return store, hook


def dumped_steps(store, run_id):
    t = Store.open(store).read(run_id, "tfdbg_v1_runs")
    return t["step"].to_pylist(), t["status"].to_pylist()


def rebuilt(store, out):
    assert cli(["replay", "--store", store, "--to", "debug-dump", "--out", str(out)]) == 0
    return run_dirs(str(out))


def first_bad(dump_dir):
    from tensorflow.python.debug.lib import debug_data
    return [d.node_name for d in load(dump_dir).find(debug_data.has_inf_or_nan)]


@pytest.fixture(scope="module")
def reference_bad_nodes(tmp_path_factory):
    """What DumpingDebugHook's own dump of the NaN step says is bad, in its time order."""
    import tensorflow as tf
    from tensorflow.python.debug.wrappers.hooks import DumpingDebugHook
    root = str(tmp_path_factory.mktemp("tfdbg") / "dumps")
    with tf.Graph().as_default():
        train(tf, [DumpingDebugHook(root)], steps=BAD_STEP + 1, bad=BAD_STEP)
    return first_bad(run_dirs(root)[BAD_STEP])


def test_a_nan_writes_the_k_steps_before_it_and_its_own(tmp_path, reference_bad_nodes):
    store, hook = record(tmp_path, feed_kw=dict(bad=BAD_STEP))
    assert dumped_steps(store, "bb") == ([9, 10, 11, 12], ["ok"] * 4)
    assert [(s, k) for s, k, _r in hook.triggers] == [(BAD_STEP, "nan")]
    assert "log:0" in hook.triggers[0][2]
    [t] = Store.open(store).triggers("bb")
    assert (t.kind, t.step, t.first_step, t.last_step, t.steps_written) == (
        "nan", BAD_STEP, 9, BAD_STEP, 4)
    dirs = rebuilt(store, tmp_path / "out")
    assert len(dirs) == 4
    assert all(load(d).dumped_tensor_data for d in dirs)
    assert all(first_bad(d) == [] for d in dirs[:3])
    bad = first_bad(dirs[3])
    assert reference_bad_nodes[0] == "log" and bad == reference_bad_nodes
    assert verify(Store.open(store)).ok


@pytest.mark.parametrize("how", ["fill", "parse"])
def test_steps_whose_held_tensors_cannot_be_read_back_are_written_incomplete(
        tmp_path, caplog, monkeypatch, how):
    """Reading a held step back can fail: filling its content in runs out of memory (forced
    through the capture's test switch), or its records do not parse. Here for the NaN step and
    the first ring step written with it: the trigger still fires on the capture's NaN count,
    the two steps are written with status 'incomplete' and no tensors, the error names them,
    and the other steps are written whole."""
    import logging
    import threading

    import tensorflow as tf
    from tfblackbox import recorder
    from tfblackbox.recorder.tf1 import native_capture
    from tfblackbox.schema.errors import DumpLayoutError
    store = str(tmp_path / "oom")
    recorder.init(store=store, run_id="oom")
    hook = recorder.DumpHook(keep_last=K, capture="memory")
    parse, failures = native_capture.parse_records, [2]

    def damaged(blob):   # the first two parses meet damage
        if failures[0]:
            failures[0] -= 1
            raise DumpLayoutError("captured records: a record runs past the end (test)")
        return parse(blob)

    def fail_two_reads(s):   # after the first step, when the thread's capture key exists
        if s == 0 and how == "fill":
            key = hook._capture._mem_keys[threading.get_ident()]
            hook._capture.native.fail_fill(key, 2)
        elif s == 0:
            monkeypatch.setattr(native_capture, "parse_records", damaged)

    with caplog.at_level(logging.ERROR, logger="tfblackbox"), tf.Graph().as_default():
        train(tf, [hook], on_step=fail_two_reads, bad=BAD_STEP)
        recorder.finish()
    steps, statuses = dumped_steps(store, "oom")
    assert steps == [9, 10, 11, 12]
    assert statuses == ["incomplete", "ok", "ok", "incomplete"]
    [(step, kind, reason)] = hook.triggers
    assert (step, kind) == (BAD_STEP, "nan") and "could not be read back" in reason
    for s in (9, 12):
        assert f"dumped step {s} could not be read back" in caplog.text
    counts = Store.open(store).read("oom", "tfdbg_v1_runs", columns=["tensor_count"])
    counts = counts["tensor_count"].to_pylist()
    assert counts[0] == counts[3] == 0 and counts[1] == counts[2] > 0
    assert verify(Store.open(store)).ok


def test_show_lists_the_trigger(tmp_path, capsys):
    store, _hook = record(tmp_path, feed_kw=dict(bad=BAD_STEP))
    capsys.readouterr()
    assert cli(["show", "--store", store, "bb"]) == 0
    out = capsys.readouterr().out
    assert "nan" in out and "log:0" in out and "9" in out


def test_no_trigger_writes_nothing_and_the_ring_stays_bounded(tmp_path):
    store, hook = record(tmp_path)
    assert hook.triggers == [] and hook.dumped_steps == N_STEPS
    s = Store.open(store)
    assert [seg for seg in s.segments() if seg.table.startswith("debug_")] == []
    assert s.triggers("bb") == [] and verify(s).ok
    assert 0 < hook.ring_peak_bytes <= hook.max_ring_bytes
    per_step = hook.ring_peak_bytes / (K + 1)
    # a bound of 2.5 steps: at most two stay, the NaN step pushes the older one out
    store2, hook2 = record(tmp_path, name="tight", max_ring_bytes=int(2.5 * per_step),
                           feed_kw=dict(bad=BAD_STEP))
    assert hook2.ring_peak_bytes <= int(2.5 * per_step)
    assert dumped_steps(store2, "tight")[0] == [11, 12]


def test_the_ring_takes_queued_steps_lazily_but_a_nan_at_once(tmp_path, monkeypatch):
    """In memory the ring's ingest is woken every WAKE_RUNS runs, not after each: fewer than
    that are taken within WAKE_WAIT all the same, and a step holding a NaN wakes it at once."""
    import time
    from tfblackbox.recorder.tf1 import dump_capture
    wait = 0.5     # longer than the NaN's ingest and persisting take
    monkeypatch.setattr(dump_capture, "WAKE_WAIT", wait)
    seen = {}

    def on_step(s):
        box = hook._box
        if s == 1:          # two runs queued, fewer than WAKE_RUNS
            time.sleep(wait * 3)
            seen["waited"] = box.ingested
        if s == 4:
            time.sleep(wait * 3)
            seen["before_nan"] = box.ingested
        if s == 5:          # the NaN step: its trigger fires without waiting for the others
            deadline = time.monotonic() + 5
            while not box.fired and time.monotonic() < deadline:
                time.sleep(0.002)
            seen["fired_after"] = time.monotonic() - (deadline - 5)

    from tfblackbox import recorder
    import tensorflow as tf
    assert dump_capture.WAKE_RUNS > 2
    run = recorder.init(store=str(tmp_path / "lazy"), run_id="lazy")
    hook = recorder.DumpHook(keep_last=K, capture="memory")
    with tf.Graph().as_default():
        train(tf, [hook], 8, on_step=on_step, bad=5)
    recorder.finish()
    assert run.finished and hook.capture == "memory"
    assert seen["waited"] == 2 and seen["before_nan"] == 5
    assert seen["fired_after"] < wait
    assert hook.triggers[0][:2] == (5, "nan")
    assert dumped_steps(str(tmp_path / "lazy"), "lazy")[0] == [2, 3, 4, 5]


def test_partition_graphs_are_parsed_only_when_a_step_is_written(tmp_path, monkeypatch):
    """The ring leaves TF's partition graphs unparsed (the recorder's nodes cut out of them in
    Python: ~0.1 s of CPU at 2 509 tensors) unless a trigger writes a step that ran them."""
    from tfblackbox.recorder.tf1 import dump_capture
    cut, real = [], dump_capture.proto.without_scope
    monkeypatch.setattr(dump_capture.proto, "without_scope",
                        lambda graph_def, scope: cut.append(scope) or real(graph_def, scope))
    _store, hook = record(tmp_path, name="quiet")
    assert hook.triggers == [] and hook.dumped_steps == N_STEPS and cut == []
    store, hook = record(tmp_path, name="fired", feed_kw=dict(bad=BAD_STEP))
    assert dumped_steps(store, "fired")[0] == list(range(BAD_STEP - K, BAD_STEP + 1))
    assert cut, "the written steps' graphs were never parsed"
    graphs = Store.open(store).read("fired", "tfdbg_v1_graphs")
    assert graphs.num_rows >= 1


def test_a_step_larger_than_the_ring_is_not_kept_unless_it_fires(tmp_path, caplog):
    store, hook = record(tmp_path, max_ring_bytes=1, feed_kw=dict(bad=BAD_STEP))
    assert dumped_steps(store, "bb")[0] == [BAD_STEP]
    assert "larger than max_ring_bytes=1" in caplog.text


def test_after_writes_the_next_steps_too(tmp_path):
    store, hook = record(tmp_path, after=2, feed_kw=dict(bad=BAD_STEP))
    assert dumped_steps(store, "bb")[0] == [9, 10, 11, 12, 13, 14]
    [t] = Store.open(store).triggers("bb")
    assert (t.first_step, t.last_step) == (9, 12)


def test_check_numerics_raising_writes_the_ring_and_the_failed_step(tmp_path):
    store, hook = record(tmp_path, check_numerics=True, persist_on=("exception",),
                         feed_kw=dict(bad=BAD_STEP))
    assert dumped_steps(store, "bb") == ([9, 10, 11, 12], ["ok", "ok", "ok", "error"])
    [(step, kind, reason)] = hook.triggers
    assert (step, kind) == (BAD_STEP, "exception")
    assert "InvalidArgumentError" in reason and "CheckNumerics" in reason
    [t] = Store.open(store).triggers("bb")
    assert t.kind == "exception" and "log went bad" in t.reason
    dirs = rebuilt(store, tmp_path / "out")
    assert len(dirs) == 4 and all(first_bad(d) == [] for d in dirs[:3])
    # the failed run's partial dumps load; `log:0` was dumped before CheckNumerics raised
    assert first_bad(dirs[3]) == ["log"]
    assert [r.exit_code for r in Store.open(store).runs()] == [1]


def test_a_failed_run_without_black_box_mode_keeps_every_dumped_step(tmp_path):
    """MonitoredSession calls no hook's end() when a run raises: the steps queued for the
    ingest and the failed run's partial dumps are written at the run's finish."""
    store, _hook = record(tmp_path, keep_last=None, check_numerics=True,
                          feed_kw=dict(bad=BAD_STEP))
    steps, status = dumped_steps(store, "bb")
    assert steps == list(range(BAD_STEP + 1)) and status[-1] == "error"
    assert set(status[:-1]) == {"ok"}


def test_a_loss_spike_fires(tmp_path):
    store, hook = record(tmp_path, persist_on=[("spike", "loss", 10.0)],
                         feed_kw=dict(spike=14))
    assert dumped_steps(store, "bb")[0] == [11, 12, 13, 14]
    [(step, kind, reason)] = hook.triggers
    assert (step, kind) == (14, "spike") and "'loss'" in reason and "median" in reason


def test_a_callable_sees_the_steps_scalar_summaries(tmp_path):
    seen = []

    def rule(step, values):
        seen.append((step, sorted(values)))
        return step == 7
    store, hook = record(tmp_path, persist_on=[rule])
    assert dumped_steps(store, "bb")[0] == [4, 5, 6, 7]
    assert seen[:3] == [(0, ["loss"]), (1, ["loss"]), (2, ["loss"])]
    assert [(s, k) for s, k, _r in hook.triggers] == [(7, "callable")]


def _drifting(tf):
    """A graph whose variable is updated in place every step (the ring must not see later
    values in an earlier step: it copies TF's tensors into memory it reuses)."""
    step = tf.compat.v1.train.get_or_create_global_step()
    x = tf.compat.v1.placeholder(tf.float32, [256], name="x")
    w = tf.compat.v1.get_variable("w", [256], initializer=tf.compat.v1.ones_initializer())
    v = tf.compat.v1.get_variable("v", [256], initializer=tf.compat.v1.ones_initializer(),
                                  use_resource=False)      # a ref variable, beside a resource
    loss = tf.reduce_sum(x * w * v, name="loss")
    tf.compat.v1.summary.scalar("loss", loss)
    with tf.control_dependencies([loss]):
        updates = [tf.compat.v1.assign_add(w, 0.5 * x), tf.compat.v1.assign_add(v, x)]
    return x, [tf.compat.v1.assign_add(step, 1, name="train"), updates, loss]


def _drift(tf, hooks, steps):
    x, fetches = _drifting(tf)
    with tf.compat.v1.train.MonitoredSession(hooks=hooks) as sess:
        for s in range(steps):
            sess.run(fetches, {x: np.linspace(-1, 1, 256, dtype=np.float32) * (s + 1)})


def test_a_written_step_holds_its_own_values_as_dumping_debug_hook_does(tmp_path):
    """Every tensor of the K+1 steps a trigger writes equals DumpingDebugHook's dump of the
    same step, the updated variable's included."""
    import tensorflow as tf
    from tensorflow.python.debug.wrappers.hooks import DumpingDebugHook
    from tfblackbox import recorder
    with tf.Graph().as_default():
        _drift(tf, [DumpingDebugHook(str(tmp_path / "ref"))], steps=8)
    store = str(tmp_path / "bb")
    recorder.init(store=store, run_id="bb")
    hook = recorder.DumpHook(keep_last=K, persist_on=[lambda step, _values: step == 7])
    with tf.Graph().as_default():
        _drift(tf, [hook], steps=12)
    recorder.finish()
    assert hook.capture == "memory"
    assert dumped_steps(store, "bb")[0] == [4, 5, 6, 7]
    got, ref = rebuilt(store, tmp_path / "out"), run_dirs(str(tmp_path / "ref"))[4:8]
    seen = []
    for g, r in zip(got, ref):
        mine = values(load(g))
        assert_same(values(load(r)), mine)
        seen.append((mine["mul/ReadVariableOp:0:DebugIdentity"][0].tobytes(),
                     mine["v:0:DebugIdentity"][0].tobytes()))
    assert len(set(seen)) == 4 and len({b for b, _ in seen}) == len({c for _, c in seen}) == 4


def test_a_second_session_gets_a_new_ring_and_its_triggers_fire(tmp_path):
    """One hook, two MonitoredSessions on one graph (finalized by the first): each session
    has its ring, and the scalar summaries still reach the callable in the second."""
    import tensorflow as tf
    from tfblackbox import recorder
    store, seen = str(tmp_path / "two"), []
    recorder.init(store=store, run_id="two")
    hook = recorder.DumpHook(keep_last=2, persist_on=("nan", lambda s, v: seen.append(v)))
    with tf.Graph().as_default():
        x, fetches = build(tf)
        for bad in (3, 5):                     # the global step starts at 0 again
            with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
                for s in range(8):
                    sess.run(fetches, {x: feed(s, bad=bad)})
    recorder.finish()
    assert [(s, k) for s, k, _r in hook.triggers] == [(3, "nan"), (5, "nan")]
    assert dumped_steps(store, "two")[0] == [1, 2, 3, 3, 4, 5]
    assert len(seen) == 16 and all(set(v) == {"loss"} for v in seen)


def test_sigusr1_writes_a_snapshot_and_training_goes_on(tmp_path):
    def poke(s):
        if s == 15:
            os.kill(os.getpid(), signal.SIGUSR1)
    before = signal.getsignal(signal.SIGUSR1)
    store, hook = record(tmp_path, persist_on=("signal",), on_step=poke)
    assert dumped_steps(store, "bb")[0] == [12, 13, 14, 15]
    assert [(s, k) for s, k, _r in hook.triggers] == [(15, "signal")]
    assert "SIGUSR1" in hook.triggers[0][2]
    assert hook.dumped_steps == N_STEPS               # it went on to the end
    assert signal.getsignal(signal.SIGUSR1) == before  # and left the handler as it was


SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {tests!r})
    import tensorflow as tf
    from tfblackbox import recorder
    from test_blackbox import build, feed
    tf.compat.v1.disable_eager_execution()
    store, bad = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None
    recorder.init(store=store, run_id="bg")
    hook = recorder.DumpHook(keep_last=3, persist_on=("nan", "exception", "signal"))
    x, fetches = build(tf)
    with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
        s = 0
        while True:
            sess.run(fetches, {{x: feed(s, bad=bad)}})
            if s == 10:
                print("ready", flush=True)
            s += 1
""")


def _start(tmp_path, *args):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__)))
    store = str(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, str(script), store, *map(str, args)],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-3000:]
    return proc, store


def test_sigterm_writes_the_ring_then_the_process_exits_as_terminated(tmp_path):
    proc, store = _start(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    s = Store.open(store)
    triggers = s.triggers("bg")
    assert len(triggers) == 1, (triggers, err[-3000:])
    [t] = triggers
    assert t.kind == "signal" and "SIGTERM" in t.reason and t.steps_written == 4
    steps, status = dumped_steps(store, "bg")
    assert steps == list(range(t.step - 3, t.step + 1)) and set(status) == {"ok"}
    assert [(r.status, r.exit_code) for r in s.runs()] == [("failed", 143)]
    assert verify(s).ok
    assert all(load(d).dumped_tensor_data for d in rebuilt(store, tmp_path / "out"))


LOST_EXIT = textwrap.dedent("""
    import os, signal, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {tests!r})
    import tensorflow as tf
    from tfblackbox import recorder
    from test_blackbox import build, feed
    tf.compat.v1.disable_eager_execution()

    class Finalized:
        def __del__(self):   # the handler runs in here: its SystemExit is only printed
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(10))

    recorder.init(store=sys.argv[1], run_id="bg")
    hook = recorder.DumpHook(keep_last=3, persist_on=("signal",))
    x, fetches = build(tf)
    with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as sess:
        for s in range(30):
            sess.run(fetches, {{x: feed(s)}})
            if s == 10:
                Finalized()
""")


def test_sigterm_whose_exit_a_finalizer_swallowed_still_ends_the_run(tmp_path):
    """Python runs a signal handler in whatever the main thread executes next; inside a
    __del__ the SystemExit it raises is only printed. The hook raises it again before the
    next step, so the process still exits as terminated (it once trained on)."""
    script = tmp_path / "train.py"
    script.write_text(LOST_EXIT.format(tests=os.path.dirname(__file__)))
    store = str(tmp_path / "store")
    done = subprocess.run([sys.executable, str(script), store], capture_output=True, text=True,
                          timeout=300)
    assert "Exception ignored" in done.stderr, done.stderr[-3000:]   # it was swallowed
    assert done.returncode == 143, done.stderr[-3000:]
    s = Store.open(store)
    [t] = s.triggers("bg")
    assert t.kind == "signal" and t.step == 10
    assert [(r.status, r.exit_code) for r in s.runs()] == [("failed", 143)]


def test_kill_9_loses_the_ring_and_the_store_verifies(tmp_path):
    proc, store = _start(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    s = Store.open(store)
    assert [seg for seg in s.segments() if seg.table.startswith("debug_")] == []
    assert [r.status for r in s.runs()] == ["running"]
    assert verify(s).ok


def test_a_trigger_in_the_catalog_has_its_steps_in_the_store_even_after_kill_9(tmp_path):
    """The firing is recorded only once its steps are in registered segments: killed the
    moment the trigger shows in the catalog, the store holds every step it names."""
    import time
    proc, store = _start(tmp_path, 12)       # NaN at step 12, after "ready" at step 10
    try:
        deadline, fired = time.monotonic() + 120, []
        while not fired and time.monotonic() < deadline and proc.poll() is None:
            try:
                fired = Store.open(store).triggers("bg")
            except Exception:                 # the store is being made, or busy
                pass
        proc.kill()
    finally:
        proc.communicate(timeout=60)
    [t] = fired
    assert (t.kind, t.step, t.first_step, t.last_step) == ("nan", 12, 9, 12)
    s = Store.open(store)
    assert dumped_steps(store, "bg")[0] == [9, 10, 11, 12]
    assert verify(s).ok


@pytest.mark.parametrize("kw, message", [
    (dict(keep_last=-1), "keep_last=-1"),
    (dict(keep_last=3, persist_on=("nan", "nans")), "'nans' is not a trigger"),
    (dict(keep_last=3, persist_on=[("spike", "loss", 0)]), "('spike', 'loss', 0)"),
    (dict(keep_last=3, after=-2), "after=-2"),
    (dict(keep_last=3, max_ring_bytes=0), "max_ring_bytes=0"),
])
def test_bad_options_are_refused_naming_the_value(kw, message):
    from tfblackbox import recorder
    with pytest.raises(ValueError) as e:
        recorder.DumpHook(**kw)
    assert message in str(e.value)
