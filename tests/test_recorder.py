"""The recording side: runs, resume, exit handling, the writer's policies, crashes."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from tfblackbox import recorder
from tfblackbox.recorder.writer import Writer
from tfblackbox.cli.main import main as cli
from tfblackbox.schema import BlackboxError, Store, WriterError, verify

SCRIPT = os.path.join(os.path.dirname(__file__), "record_script.py")


def add_scalars(steps, tag="x"):
    def job(buffers):
        for s in steps:
            buffers.add("scalars", step=s, wall_time=float(s), tag=tag, value=float(s))
    return job


def test_resume_modes(store_dir):
    run = recorder.init(store=store_dir, run_id="abc", config={"a": 1}, name="one")
    recorder.finish()
    with pytest.raises(BlackboxError, match="already exists.*resume="):
        recorder.init(store=store_dir, run_id="abc")
    with pytest.raises(BlackboxError, match="resume='must'.*'zzz' is not in store"):
        recorder.init(store=store_dir, run_id="zzz", resume="must")
    with pytest.raises(BlackboxError, match="run_id '../x' is not valid"):
        recorder.init(store=store_dir, run_id="../x")
    again = recorder.init(store=store_dir, run_id="abc", resume="must", config={"b": 2})
    assert again.attempt == run.attempt + 1
    recorder.finish()
    rec = Store.open(store_dir).run("abc")
    assert rec.config == {"a": 1, "b": 2} and rec.status == "finished" and rec.name == "one"


def test_unwritable_store_is_a_clear_error_at_init(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(BlackboxError, match=r"cannot create a store at .*f/store"):
        recorder.init(store=str(tmp_path / "f" / "store"))


def test_drop_policy_counts_and_records_what_it_dropped(store_dir, caplog):
    run = recorder.init(store=store_dir, max_queue_bytes=1000, on_full="drop")
    gate = __import__("threading").Event()
    run.submit(lambda b: gate.wait(10), 10)          # holds the writer thread
    time.sleep(0.2)
    accepted = [run.submit(add_scalars([i]), 400) for i in range(6)]
    gate.set()
    assert accepted.count(False) >= 3
    with caplog.at_level(logging.WARNING, logger="tfblackbox"):
        recorder.finish()
    assert "dropped" in caplog.text
    store = Store.open(store_dir)
    [w] = store.writers(run.run_id)
    assert w.dropped_rows == accepted.count(False)
    assert store.scalars(run.run_id).num_rows == accepted.count(True)


def test_block_policy_loses_nothing(store_dir):
    run = recorder.init(store=store_dir, max_queue_bytes=1000, on_full="block")
    for i in range(50):
        assert run.submit(add_scalars([i]), 600)
    recorder.finish()
    assert Store.open(store_dir).scalars(run.run_id)["step"].to_pylist() == list(range(50))


def test_writer_error_reaches_the_caller_and_rows_are_kept(store_dir, caplog):
    run = recorder.init(store=store_dir)
    data = os.path.join(store_dir, "data")
    os.rename(data, data + ".away")
    with open(data, "w") as f:
        f.write("not a directory")                   # every segment write now fails
    run.submit(add_scalars([0, 1]))
    with pytest.raises(WriterError, match="could not flush"):
        run.flush()
    with caplog.at_level(logging.ERROR, logger="tfblackbox"):
        run.submit(add_scalars([5]))                  # Run.submit reports, never raises
    os.remove(data)
    os.rename(data + ".away", data)
    run.flush()                                       # the kept rows are retried
    recorder.finish()
    assert Store.open(store_dir).scalars(run.run_id)["step"].to_pylist() == [0, 1, 5]


def test_writer_flushes_every_n_rows_and_t_seconds(store_dir):
    store = Store.create(store_dir)
    store.create_run("r")
    wid, attempt = store.begin_attempt("r")
    w = Writer(store, "r", wid, attempt, flush_rows=100, flush_secs=0.3)
    for i in range(25):
        w.submit(add_scalars(range(i * 10, i * 10 + 10)))
    deadline = time.time() + 5
    while len(store.segments("r")) < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert [g.row_count for g in store.segments("r")][:2] == [100, 100]
    assert sum(g.row_count for g in store.segments("r")) == 250    # the rest after 0.3 s
    w.close()


def test_undecodable_item_is_reported_not_fatal(store_dir, graph, caplog):
    """The writer's error reaches the caller once: raised by the flush, or, when the writer
    failed before the next submit, logged by that submit (which never raises)."""
    import logging
    import re
    from tfblackbox.schema.codecs.summary_decode import decode_summary
    run = recorder.init(store=store_dir)
    with caplog.at_level(logging.ERROR, logger="tfblackbox"):
        run.submit(lambda b: decode_summary(b"\xff\xff not a summary", 0, 0.0, b))
        run.submit(add_scalars([3]))
        try:
            run.flush()
            reported = "\n".join(r.getMessage() for r in caplog.records
                                  if "training goes on" in r.getMessage())
        except WriterError as e:
            reported = str(e)
    assert re.search("could not be decoded|Error parsing|DecodeError", reported), caplog.text
    recorder.finish()
    store = Store.open(store_dir)
    assert store.scalars(run.run_id)["step"].to_pylist() == [3]
    assert "could not be decoded" in store.writers(run.run_id)[0].error


def run_script(store, mode, *extra, timeout=120):
    return subprocess.run([sys.executable, SCRIPT, store, mode, *map(str, extra)],
                          capture_output=True, text=True, timeout=timeout)


def test_exit_without_finish_flushes_and_marks_finished(store_dir):
    assert run_script(store_dir, "exit", 30).returncode == 0
    store = Store.open(store_dir)
    assert store.run("crash").status == "finished"
    assert store.scalars("crash")["step"].to_pylist() == list(range(30))


def test_an_exception_marks_the_run_failed(store_dir):
    proc = run_script(store_dir, "raise", 10)
    assert proc.returncode == 1 and "training blew up" in proc.stderr
    r = Store.open(store_dir).run("crash")
    assert (r.status, r.exit_code) == ("failed", 1)
    assert Store.open(store_dir).scalars("crash").num_rows == 10


def test_sigkill_mid_training_leaves_a_consistent_store(store_dir):
    proc = subprocess.Popen([sys.executable, SCRIPT, store_dir, "kill"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    flushed = -1
    try:
        for line in proc.stdout:
            flushed = int(line.split()[1])
            if flushed >= 100:
                break
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert flushed >= 100
    assert cli(["verify", "--store", store_dir]) == 0
    store = Store.open(store_dir)
    steps = store.scalars("crash")["step"].to_pylist()
    assert steps[: flushed + 1] == list(range(flushed + 1))         # all up to the last flush
    assert store.scalars("crash")["value"].to_pylist()[:flushed + 1] == [
        float(s) for s in range(flushed + 1)]
    assert store.histograms("crash").num_rows >= flushed + 1
    assert store.run("crash").status == "running"                  # died: stays running
    # a resumed attempt goes on, and the store still verifies
    assert run_script(store_dir, "exit", 5).returncode == 0
    assert cli(["verify", "--store", store_dir]) == 0
    assert Store.open(store_dir).run("crash").status == "finished"


def test_runs_and_show_commands(store_dir, capsys):
    run = recorder.init(store=store_dir, project="proj", name="nm")
    run.submit(add_scalars([0, 1, 2], tag="loss"))
    recorder.finish()
    assert cli(["runs", "--store", store_dir, "--json"]) == 0
    [r] = json.loads(capsys.readouterr().out)
    assert (r["run_id"], r["project"], r["status"]) == (run.run_id, "proj", "finished")
    assert r["size_bytes"] > 0
    assert cli(["show", run.run_id, "--store", store_dir, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tables"]["scalars"]["tags"]["loss"] == {"rows": 3, "first_step": 0,
                                                        "last_step": 2}
    assert cli(["show", "nope", "--store", store_dir]) == 2
    assert "not in store" in capsys.readouterr().err


def test_run_record_has_the_git_commit_of_the_working_directory(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], check=True)
    (repo / "train.py").write_text("print('hi')\n")
    subprocess.run(git + ["add", "train.py"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    monkeypatch.chdir(repo)
    run = recorder.init(store=str(tmp_path / "store"))
    recorder.finish()
    assert Store.open(str(tmp_path / "store")).run(run.run_id).git_commit == head
    monkeypatch.chdir(tmp_path)                       # outside any repo: no commit
    run = recorder.init(store=str(tmp_path / "store"))
    recorder.finish()
    assert Store.open(str(tmp_path / "store")).run(run.run_id).git_commit is None


def _dump_rows(steps, payload_bytes, rows_per_step=10):
    """Ready-made tfdbg_v1_tensors rows (as DumpHook's ingest builds them), ~payload_bytes each."""
    import pyarrow as pa
    from tfblackbox.schema.tables import schema_of
    schema = schema_of("tfdbg_v1_tensors")
    schema = schema.remove(schema.get_field_index("attempt"))
    rows = [dict(step=s, wall_time=float(s), tag=f"n{k}:0:DebugIdentity", run_key=f"r{s}",
                 device="/job:localhost/replica:0/task:0/device:CPU:0", node_name=f"n{k}",
                 output_slot=0, debug_op="DebugIdentity", timestamp=s * 1000 + k,
                 ext_timestamp=None, dtype="float32", shape=[payload_bytes // 4],
                 event=bytes([s % 251, k]) * (payload_bytes // 2))
            for s in steps for k in range(rows_per_step)]
    return pa.Table.from_pylist(rows, schema=schema)


def _writer(store_dir):
    store = Store.create(store_dir)
    store.create_run("r")
    wid, attempt = store.begin_attempt("r")
    return store, Writer(store, "r", wid, attempt, flush_secs=60)


def test_large_ready_made_tables_are_encoded_ahead_in_row_groups(store_dir):
    import pyarrow.parquet as pq
    store, w = _writer(store_dir)
    for s in range(12):                       # 12 x 10 rows of 30 KB: ~3.6 MB, > 1 MiB
        table = _dump_rows([s], 30_000)
        w.submit(lambda b, t=table: b.add_table("tfdbg_v1_tensors", t), table.nbytes)
    w.close()
    segs = store.segments("r", "tfdbg_v1_tensors")
    assert len(segs) == 1 and segs[0].row_count == 120
    assert (segs[0].min_step, segs[0].max_step) == (0, 11)
    assert pq.ParquetFile(os.path.join(store_dir, segs[0].path)).num_row_groups >= 3
    got = store.read("r", "tfdbg_v1_tensors", columns=["step", "timestamp", "event"])
    assert got["step"].to_pylist() == [s for s in range(12) for _k in range(10)]
    assert got["event"].to_pylist() == _dump_rows(range(12), 30_000)["event"].to_pylist()
    report = verify(store)
    assert report.ok and report.checked == len(store.segments("r"))


@pytest.mark.parametrize("where", ["encode", "register"])
def test_a_failing_encode_ahead_falls_back_and_keeps_every_row(store_dir, monkeypatch, caplog,
                                                               where):
    from tfblackbox.schema.store import segments
    store, w = _writer(store_dir)
    fail = {"left": 1}

    def once(real):
        def wrapper(*a, **k):
            if fail["left"]:
                fail["left"] -= 1
                raise OSError(f"injected {where} failure")
            return real(*a, **k)
        return wrapper
    if where == "encode":
        monkeypatch.setattr(segments.StreamEncoder, "write", once(segments.StreamEncoder.write))
    else:
        monkeypatch.setattr(store, "write_encoded", once(store.write_encoded))
    with caplog.at_level(logging.WARNING, logger="tfblackbox"):
        for s in range(8):
            table = _dump_rows([s], 30_000)
            w.submit(lambda b, t=table: b.add_table("tfdbg_v1_tensors", t), table.nbytes)
        w.close()
    assert fail["left"] == 0
    assert f"injected {where} failure" in caplog.text
    got = store.read("r", "tfdbg_v1_tensors", columns=["step"])["step"].to_pylist()
    assert sorted(got) == [s for s in range(8) for _k in range(10)]


def test_disk_full_loses_nothing_logged_after_space_returns(small_fs):
    """A store on a full file system: training goes on, no partial files pile up, and once
    space returns every row is written, finish() marks the run and the store verifies."""
    from conftest import fill
    fs = small_fs("4m")
    store_dir = str(fs / "store")
    run = recorder.init(store=store_dir, run_id="full", flush_secs=3600)
    filler = fill(fs, leave=0)
    for i in range(5):                                  # flushes fail: the disk is full
        assert run.submit(add_scalars(range(i * 100, i * 100 + 100)), 100 * 40)
        with pytest.raises(WriterError):
            recorder.flush()
        assert not [n for _d, _s, files in os.walk(store_dir) for n in files
                    if n.endswith(".tmp")], "a failed write left its temporary file"
    os.remove(filler)                                   # space returns
    assert run.submit(add_scalars(range(500, 600)), 100 * 40)
    recorder.finish()
    store = Store.open(store_dir)
    assert store.scalars("full")["step"].to_pylist() == list(range(600))
    assert store.run("full").status == "finished"
    assert verify(store).ok


def test_finish_does_not_raise_counts_what_was_lost_and_still_marks_the_run(small_fs, caplog):
    """On a disk still full at finish(), finish() returns (as wandb's finish): it logs at
    ERROR, counts the rows it could not store on the attempt (losses, reason 'finish'), and
    marks the run; flush() before it raises WriterError for those who check."""
    from conftest import fill
    fs = small_fs("4m")
    store_dir = str(fs / "store")
    run = recorder.init(store=store_dir, run_id="stuck", flush_secs=3600)
    filler = fill(fs, leave=0)
    run.submit(add_scalars(range(100)), 4000)
    with pytest.raises(WriterError, match="No space left"):
        recorder.flush()
    with caplog.at_level(logging.ERROR, logger="tfblackbox"):
        recorder.finish()
    # the environment's rows (run_events, system_metrics, file_blobs) found no room either
    assert "100 scalars rows (unwritten at finish)" in caplog.text
    assert "finish failed while writing the last rows" in caplog.text
    store = Store.open(store_dir)
    assert store.run("stuck").status == "finished"    # the space reserve made room for it
    [w] = store.writers("stuck")
    assert w.ended_at is not None and "No space left" in w.error
    lost = {x.table: (x.reason, x.rows, x.first_step, x.last_step)
            for x in store.losses("stuck")}
    assert lost["scalars"] == ("finish", 100, 0, 99)
    assert set(lost) <= {"scalars", "run_events", "system_metrics", "file_blobs"}
    assert all(reason == "finish" for reason, *_ in lost.values())
    os.remove(filler)
    run2 = recorder.init(store=store_dir, run_id="stuck", resume="must")
    run2.submit(add_scalars(range(100, 110)), 400)
    recorder.finish()
    assert store.scalars("stuck")["step"].to_pylist() == list(range(100, 110))


def test_no_row_waits_longer_than_flush_secs_plus_one_write(store_dir):
    """The flush interval is timed from the oldest buffered row, not from the end of the last
    flush: a row that arrives while a slow flush runs is written flush_secs after it came
    (plus that write), not flush_secs after the slow flush ended (plus another write)."""
    store = Store.create(store_dir)
    store.create_run("r")
    wid, attempt = store.begin_attempt("r")
    slow, registered = 0.4, {}
    write = store.write_segment

    def slow_write(run_id, name, table, writer_id=None):    # a slow disk
        time.sleep(slow)
        rec = write(run_id, name, table, writer_id)
        for step in table["step"].to_pylist():
            registered[step] = time.monotonic()
        return rec
    store.write_segment = slow_write
    w = Writer(store, "r", wid, attempt, flush_secs=0.5)
    arrived = {}
    t0 = time.monotonic()
    for i, at in enumerate([0.0, 0.55, 0.7, 1.6, 2.5]):   # 0.55, 0.7: during the first write
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        arrived[i] = time.monotonic()
        w.submit(add_scalars([i]))
    w.close()
    waits = {i: registered[i] - arrived[i] for i in arrived}
    assert max(waits.values()) <= 0.5 + slow + 0.2, waits   # was up to ~1.3 s


def test_a_store_made_read_only_mid_training_does_not_crash_it(tmp_path):
    """The store's directory turns read-only under a live training process (a read-only bind
    mount over it: new opens fail even for root): its flushes fail, training goes on, and
    the process exits 0. Nothing of the catalog is memory-mapped in the process, so no
    SIGBUS can come from SQLite's files (WAL's -shm index was mmap'd)."""
    store = str(tmp_path / "store")
    go = str(tmp_path / "go")
    child = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                                           "unwritable_script.py"), store, go],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mounted = False
    try:
        assert child.stdout.readline().strip() == "ready"
        for cmd in (["mount", "--bind", store, store], ["mount", "-o", "remount,bind,ro", store]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                child.kill()
                pytest.skip(f"cannot make a read-only bind mount here: {proc.stderr.strip()}")
            mounted = True
        with pytest.raises(OSError):
            open(os.path.join(store, "probe"), "wb")
        open(go, "w").close()
        out, err = child.communicate(timeout=180)
    finally:
        if mounted:
            subprocess.run(["umount", store], capture_output=True)
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err[-3000:]
    assert "flush failed: WriterError" in out
    assert "mapped: []" in out, out
    s = Store.open(store)
    assert verify(s).ok
    assert s.scalars("ro")["step"].to_pylist()[:21] == list(range(21))


def test_the_tf_version_is_recorded_when_tf_comes_after_init(store_dir):
    code = ("import sys; from tfblackbox import recorder; "
            "recorder.init(store=sys.argv[1], run_id='late'); "
            "assert 'tensorflow' not in sys.modules; import tensorflow; recorder.finish()")
    proc = subprocess.run([sys.executable, "-c", code, store_dir], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import tensorflow as tf
    assert Store.open(store_dir).run("late").tf_version == tf.__version__


def test_a_refused_init_leaves_nothing_behind(tmp_path):
    """Bad options are refused before the store is touched: no run left 'running' for ever,
    no data/ directory that makes the path unusable."""
    store_dir = str(tmp_path / "s")
    with pytest.raises(ValueError, match="on_full='sometimes'"):
        recorder.init(store=store_dir, on_full="sometimes")
    with pytest.raises(TypeError, match="unknown option.*flush_row\\b"):
        recorder.init(store=store_dir, flush_row=3)
    with pytest.raises(ValueError, match="flush_secs=0"):
        recorder.init(store=store_dir, flush_secs=0)
    assert not os.path.exists(store_dir)
    with pytest.raises(BlackboxError, match="nosuchdb"):
        recorder.init(store=store_dir, catalog_url="nosuchdb://x/y")
    assert not os.path.exists(store_dir)
    run = recorder.init(store=store_dir)
    recorder.finish()
    assert [r.run_id for r in Store.open(store_dir).runs()] == [run.run_id]
