"""Many writers, one PostgreSQL-backed store, against the real server the tests start: eight
processes recording at once (different runs, and attempts of one run) lose no row and leave a
clean store; the server stopped for 10 s under a real TF training: training goes on and every
row is registered once the server is back."""

import pytest
import subprocess
import sys
import textwrap
import time

from tfblackbox.schema import Store, verify

STEPS, TAGS = 2000, 5

WRITER = textwrap.dedent("""
    import sys, time
    from tfblackbox import recorder
    store, data, run_id, index, start = sys.argv[1:6]
    index, steps, tags = int(index), int(sys.argv[6]), [f"m{k}" for k in range(int(sys.argv[7]))]
    while time.time() < float(start):      # all eight start at once, on a new database
        time.sleep(0.001)
    run = recorder.init(store=store, data=data, run_id=run_id, resume="allow",
                        flush_rows=500, flush_secs=0.5)
    n = len(tags)
    for s in range(steps):
        run.submit(lambda b, s=s: b.add_many("scalars", n, step=[s] * n,
                                             wall_time=[time.time()] * n, tag=tags,
                                             value=[index * 1e6 + s * 10 + k for k in range(n)]))
        if s % 100 == 0:
            time.sleep(0.02)               # a training loop's pace, so flushes interleave
    recorder.finish()
    print(run.run_id, run.attempt, run.writer.rows_written, run.writer.dropped_jobs)
""")


def test_eight_processes_record_into_one_postgresql_store_at_once(pg_url, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    data = str(tmp_path / "data")
    runs = ["solo-0", "solo-1", "solo-2", "solo-3"] + ["shared"] * 4
    start = time.time() + 4.0
    procs = [subprocess.Popen([sys.executable, str(script), pg_url, data, run_id, str(i),
                               str(start), str(STEPS), str(TAGS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, run_id in enumerate(runs)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e[-2000:] for _o, e in outs]
    for _out, err in outs:
        assert "ERROR" not in err, err[-2000:]
    printed = [out.split() for out, _err in outs]
    # rows written: the scalars, and the environment's rows (run_events, system_metrics, files)
    assert all(int(rows) > STEPS * TAGS and dropped == "0"
               for _r, _a, rows, dropped in printed), printed
    store = Store.open(pg_url)
    assert sorted(r.run_id for r in store.runs()) == ["shared"] + runs[:4]
    assert {r.status for r in store.runs()} == {"finished"}
    for i, run_id in enumerate(runs[:4]):
        t = store.scalars(run_id)
        assert t.num_rows == STEPS * TAGS
        assert sorted(t["value"].to_pylist()) == [i * 1e6 + s * 10 + k for s in range(STEPS)
                                                  for k in range(TAGS)]
    writers = store.writers("shared")
    assert [w.attempt for w in writers] == [1, 2, 3, 4]
    assert all(w.error is None and w.dropped_rows == 0 and w.ended_at for w in writers)
    everything = store.scalars("shared", latest_only=False)
    assert everything.num_rows == 4 * STEPS * TAGS
    attempt_of = {int(a): i for i, (_r, a, _n, _d) in enumerate(printed) if i >= 4}
    for attempt, index in attempt_of.items():   # each attempt's rows are its process's, whole
        values = [v for v, a in zip(everything["value"].to_pylist(),
                                    everything["attempt"].to_pylist()) if a == attempt]
        assert sorted(values) == [index * 1e6 + s * 10 + k for s in range(STEPS)
                                  for k in range(TAGS)]
    report = verify(store, grace_secs=0)
    assert report.ok and report.checked == len(store.segments())
    assert report.orphans_removed == [] and report.in_flight == []


TRAIN = textwrap.dedent("""
    import os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from tfblackbox import recorder
    store, data, stop_file = sys.argv[1:4]
    tf.compat.v1.disable_eager_execution()
    recorder.init(store=store, data=data, run_id="train", flush_secs=1.0)
    step = tf.compat.v1.train.get_or_create_global_step()
    fed = tf.compat.v1.placeholder(tf.float32, [])
    tf.compat.v1.summary.scalar("x", fed * 2.0)
    tf.compat.v1.summary.histogram("h", tf.random.normal([20]))
    train_op = tf.compat.v1.assign_add(step, 1)
    with tf.compat.v1.train.MonitoredTrainingSession(
            hooks=[recorder.SummaryHook(steps_per_log=1)]) as sess:
        n = 0
        while not os.path.exists(stop_file):
            sess.run(train_op, feed_dict={fed: float(n)})
            n += 1
            time.sleep(0.005)
    recorder.finish()
    print("steps", n)
""")


@pytest.mark.long
def test_training_goes_on_while_postgresql_is_stopped_for_10_s(postgres, pg_url, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    stop_file = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, str(script), pg_url, str(tmp_path / "data"),
                             str(stop_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 240
        while True:     # until the training has registered its first segments
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no segment registered within 240 s"
            try:
                with Store.open(pg_url) as s:
                    if s.has_run("train") and len(s.segments("train")) >= 2:
                        break
            except Exception:
                pass    # the store is being created
            time.sleep(0.5)
        t_stop = time.time()
        postgres.stop()
        time.sleep(10)
        postgres.start()
        t_back = time.time()
        time.sleep(3)
        stop_file.write_text("stop")
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "connection lost" in err and "answers again" in err     # it did meet the outage
    assert "ERROR" not in err, err[-3000:]
    last = int(out.split()[-1])
    store = Store.open(pg_url)
    x = store.scalars("train")
    assert x["step"].to_pylist() == list(range(last))              # every step, once
    assert x["value"].to_pylist() == [float(s * 2) for s in range(last)]
    during = [t for t in x["wall_time"].to_pylist() if t_stop + 1 < t < t_back - 1]
    assert len(during) > 50                                         # training went on meanwhile
    assert store.histograms("train").num_rows == last
    [w] = store.writers("train")
    assert w.error is None and w.dropped_rows == 0
    assert store.run("train").status == "finished"
    assert verify(store).ok
