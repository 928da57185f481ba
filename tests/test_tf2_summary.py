"""sync_tensorboard with real TensorFlow: a custom tf.function loop and Keras' TensorBoard
callback record every tfevents record into the store, the files come back byte for byte, the
user's files are what TF writes without the recorder, a SIGKILL leaves a store that verifies,
and everything replays to W&B (offline, read back from the .wandb log)."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tf2_files
import wandb_log
from tfblackbox.cli.main import main as cli_main, replay_main
from tfblackbox.cli.exits import EXIT_OK
from tfblackbox import recorder
from tfblackbox.schema import Store
from tfblackbox.schema.formats import tfevents, tfrecord
from tfblackbox.schema.codecs.tfevents_restore import write_logdir

STEPS = 6


@pytest.fixture(scope="module")
def loop_runs(tmp_path_factory):
    """The same loop twice: without the recorder, and with sync_tensorboard=True."""
    base = tmp_path_factory.mktemp("loop")
    tf2_files.run_script("loop", base / "plain", "--steps", STEPS)
    proc = tf2_files.run_script("loop", base / "rec", "--store", base / "store", "--steps", STEPS)
    assert "run tf2" in proc.stdout and "done" in proc.stdout
    return base


def _store_records(store, run_id="tf2"):
    """{(file, offset): raw row} (a record an attempt read again after a kill: its latest)."""
    raw = store.read(run_id, "tfevents_records", latest_only=False).to_pylist()
    assert len({(r["file"], r["offset"], r["attempt"]) for r in raw}) == len(raw), \
        "an attempt stored a record twice"
    rows = {}
    for r in sorted(raw, key=lambda r: r["attempt"]):
        rows[r["file"], r["offset"]] = r
    return rows


def _check_restore(store, logdir, tmp_path, run_id="tf2"):
    """Every record of every file under logdir is a row, and the files come back byte for
    byte from the store."""
    files = tf2_files.event_files(logdir)
    rows = _store_records(store, run_id)
    expected = set()
    for p in files:
        reader = tfrecord.RecordReader(p)
        expected |= {(tf2_files.relpath(p, logdir), off) for off, _d in reader}
        if reader.partial:   # a kill mid-write left a half record: kept raw, as "unframed"
            tail = (tf2_files.relpath(p, logdir), reader.offset)
            expected.add(tail)
            assert rows[tail]["what"] == "unframed" and len(rows[tail]["record"]) == (
                reader.partial)
    assert set(rows) == expected
    out = tmp_path / "restored"
    written = write_logdir(store, run_id, out)
    assert len(written) == len(files)
    for p in files:
        assert (out / tf2_files.relpath(p, logdir)).read_bytes() == open(p, "rb").read()
    return rows


def test_custom_loop_every_record_is_stored_and_the_files_come_back(loop_runs, tmp_path):
    store = Store.open(str(loop_runs / "store"))
    [path] = tf2_files.event_files(loop_runs / "rec")
    rows = _check_restore(store, loop_runs / "rec", tmp_path)
    raw = [d for _o, d in tfrecord.read_records(path)]
    assert raw == tf2_files.tensorboard_records(path)
    events = tf2_files.tf_events(path)
    assert len(events) == len(raw) == len(rows) == 1 + 5 * STEPS + 1 + 1 + 3
    for (_file, _off), row in rows.items():   # the parsed columns are the Event's
        ev = type(events[0]).FromString(raw[row["index"]])
        assert (row["step"], row["wall_time"]) == (ev.step, ev.wall_time)
    kinds = sorted({r["what"] for r in rows.values()})
    assert kinds == ["file_version", "graph_def", "summary"]
    # payloads of summaries are stored once, in the decoded rows: their raw rows are small
    summaries = [r for r in rows.values() if r["what"] == "summary"]
    assert sum(len(r["record"]) for r in summaries) < sum(r["length"] for r in summaries) / 10

    # decoded: the values TF wrote, at the tf.summary steps
    by_tag = {}
    for ev in events:
        for v in ev.summary.value:
            by_tag.setdefault(v.tag, []).append((ev.step, ev.wall_time, v))
    import tensorflow as tf
    sc = store.scalars("tf2")
    loss = [(s, w, tf.make_ndarray(v.tensor).item()) for s, w, v in by_tag["loss"]]
    got = [(s, w, x) for s, w, t, x in zip(*(sc[c].to_pylist() for c in
                                             ("step", "wall_time", "tag", "value")))
           if t == "loss"]
    assert got == loss and [s for s, _w, _x in got] == list(range(STEPS))
    assert sc.filter(np.array(sc["tag"].to_pylist()) == "raw/simple")["value"].to_pylist() == [4.0]
    hist = store.histograms("tf2")
    assert hist.num_rows == STEPS and set(hist["source"].to_pylist()) == {"tensor"}
    for row, (_s, _w, v) in zip(hist.to_pylist(), by_tag["weights"]):
        arr = tf.make_ndarray(v.tensor)
        assert row["bucket_lefts"] == arr[:, 0].tolist()
        assert row["bucket_counts"] == arr[:, 2].tolist()
    media = store.media("tf2").to_pylist()
    images = [m for m in media if m["kind"] == "image"]
    assert [m["data"] for m in images] == [b for _s, _w, v in by_tag["kernel"]
                                           for b in v.tensor.string_val[2:]]
    assert len(images) == 2 * STEPS and images[0]["width"] == 8 and images[0]["height"] == 16
    audio = [m for m in media if m["kind"] == "audio"]
    assert [m["data"] for m in audio] == [v.tensor.string_val[0] for _s, _w, v in by_tag["tone"]]
    text = [m for m in media if m["kind"] == "text"]
    assert [m["data"] for m in text] == [v.tensor.string_val[0] for _s, _w, v in by_tag["status"]]
    assert [m["tag"] for m in media if m["kind"] == "pr_curve"] == ["pr/pr_curves"]
    tensors = store.tensors("tf2").to_pylist()
    assert {(t["tag"], t["plugin_name"]) for t in tensors} == {
        ("step_graph", "graph_run_metadata_graph"), ("_hparams_/session_start_info", "hparams")}
    graph = next(t for t in tensors if t["tag"] == "step_graph")
    assert graph["tensor"] == by_tag["step_graph"][0][2].tensor.SerializeToString()


def test_the_users_files_are_what_tf_writes_without_the_recorder(loop_runs):
    [plain] = tf2_files.event_files(loop_runs / "plain")
    [rec] = tf2_files.event_files(loop_runs / "rec")
    a, b = tf2_files.tf_events(plain), tf2_files.tf_events(rec)
    assert len(a) == len(b)
    differ = set()
    for x, y in zip(a, b):
        assert tf2_files.normalized(x) == tf2_files.normalized(y)
        x.wall_time = y.wall_time = 0
        if x.SerializeToString() != y.SerializeToString():
            differ.add(x.summary.value[0].tag if x.summary.value else x.WhichOneof("what"))
    # byte-identical apart from the wall time, except where TF itself differs run to run:
    # graphs (node and attr map order) and hparams (the session's start time)
    assert differ <= {"step_graph", "graph_def", "_hparams_/session_start_info"}
    assert os.path.getsize(plain) == os.path.getsize(rec)


def test_replay_to_wandb_pushes_every_kind_as_sync_tensorboard_rows(loop_runs, tmp_path):
    store_dir = str(tmp_path / "store")
    import shutil
    shutil.copytree(loop_runs / "store", store_dir)
    wdir = tmp_path / "wandb"
    args = ["--store", store_dir, "--to", "wandb", "--mode", "offline", "--wandb-dir",
            str(wdir), "--no-progress"]
    assert replay_main(args) == EXIT_OK
    [f] = wandb_log.run_files(str(wdir))
    rows = wandb_log.history(f)
    # as W&B's sync_tensorboard pushes them: each step's events a row of its own, with
    # global_step, numbered by W&B in time order
    assert [r["_step"] for r in rows] == list(range(STEPS + 2))
    assert all("global_step" in r for r in rows)
    stamps = [r["_timestamp"] for r in rows]
    assert stamps == sorted(stamps)
    hist = {r["global_step"]: r for r in rows if "loss" in r}
    assert sorted(hist) == list(range(STEPS))
    store = Store.open(store_dir)
    losses = {s: v for s, t, v in zip(*(store.scalars("tf2")[c].to_pylist()
                                         for c in ("step", "tag", "value"))) if t == "loss"}
    media = {(m["step"], m["tag"]): m["data"] for m in store.media("tf2").to_pylist()}
    files = os.path.join(os.path.dirname(f), "files")
    for step in range(STEPS):
        row = hist[step]
        assert row["loss"] == losses[step]
        assert row["weights"]["_type"] == "histogram"
        assert row["kernel"]["_type"] == "images/separated" and row["kernel"]["count"] == 2
        assert row["tone"]["_type"] == "audio-file"
        assert row["tone"]["sha256"] == hashlib.sha256(media[step, "tone"]).hexdigest()
        assert row["status"]["_type"] == "html-file"
        with open(os.path.join(files, row["status"]["path"])) as fh:
            assert media[step, "status"].decode() in fh.read()
    [pr] = [r for r in rows if "pr/pr_curves" in r]
    assert pr["pr/pr_curves"]["_type"] == "table-file"
    assert [r["raw/simple"] for r in rows if "raw/simple" in r] == [4.0]
    # a second replay pushes nothing: the cursor is at the last step
    assert replay_main(args) == EXIT_OK
    assert wandb_log.run_files(str(wdir)) == [f]


def test_keras_tensorboard_callback(tmp_path):
    logdir, store_dir = tmp_path / "logs", tmp_path / "store"
    tf2_files.run_script("keras", logdir, "--store", store_dir)
    store = Store.open(str(store_dir))
    files = tf2_files.event_files(logdir)
    assert {tf2_files.relpath(p, logdir).split("/")[0] for p in files} == {"train", "validation"}
    _check_restore(store, logdir, tmp_path)
    tags = set(store.scalars("tf2")["tag"].to_pylist())
    assert {"train/epoch_loss", "validation/epoch_loss", "train/epoch_accuracy",
            "validation/epoch_accuracy", "train/batch_loss"} <= tags
    epochs = store.scalars("tf2").filter(
        np.array(store.scalars("tf2")["tag"].to_pylist()) == "validation/epoch_loss")
    assert epochs["step"].to_pylist() == [0, 1]
    assert store.histograms("tf2").num_rows > 0 and all(
        t.startswith("train/") for t in store.histograms("tf2")["tag"].to_pylist())
    assert any(m["kind"] == "image" for m in store.media("tf2").to_pylist())


# a line of TF's C++ logging: level, date, time, thread, source:line] message
TF_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([\w.]+):\d+\] (.*)$")


def _tf_lines(stderr):
    """TF's C++ log lines (and its Python logger's), numbers taken out, as a sorted list."""
    lines = []
    for line in stderr.splitlines():
        m = TF_LINE.match(line)
        if m:
            lines.append(f"{m[1]} {m[2]}: {re.sub(r'[0-9]+', 'N', m[3])}")
        elif re.match(r"^(WARNING|ERROR|CRITICAL):tensorflow:", line):
            lines.append(re.sub(r"[0-9]+", "N", line))
    return sorted(lines)


@pytest.mark.parametrize("mode", ["keras", "dropped"])
def test_no_tf_log_lines_of_the_recorders_making(mode, tmp_path):
    """With TF's logging at its default, a run under sync_tensorboard prints the TF lines the
    same program prints without the recorder, nothing more: finish flushes only the writers
    still open (not a Keras callback's closed writers, nor one whose writer object is gone
    while a tf.function holds its handle: TF logs a NOT_FOUND warning for each)."""
    env = {k: v for k, v in tf2_files.child_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}

    def run(logdir, *store):
        proc = subprocess.run([sys.executable, tf2_files.SCRIPT, mode, str(logdir), *store,
                               "--tf-default-logging"], capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr[-4000:]
        return proc.stderr

    plain = run(tmp_path / "plain")
    recorded = run(tmp_path / "rec", "--store", str(tmp_path / "store"))
    assert _tf_lines(plain), "TF printed nothing at its default logging: the test sees nothing"
    assert "SummaryWriterInterface" not in recorded and "OP_REQUIRES" not in recorded, recorded
    assert _tf_lines(recorded) == _tf_lines(plain)
    store = Store.open(str(tmp_path / "store"))
    _check_restore(store, tmp_path / "rec", tmp_path)


def _epoch_points(events):
    """{tag: [wall_time]} of the Keras epoch scalars ("train/epoch_loss", ...) among
    `events`: [(namespace, serialized Event)]."""
    points = {}
    for namespace, data in events:
        ev = tfevents.parse_event(data)
        for v in ev.values:
            if v.tag.startswith("epoch_"):
                points.setdefault(f"{namespace}/{v.tag}", []).append(ev.wall_time)
    return points


def _files_events(logdir):
    return [(tf2_files.relpath(p, logdir).split("/")[0], d)
            for p in tf2_files.event_files(logdir) for _o, d in tfrecord.read_records(p)]


def test_a_reused_log_dir_records_only_the_runs_own_event_files(tmp_path):
    """The same Keras script twice into one TensorBoard log_dir: under sync_tensorboard each
    run records only the event files written since it began (the second run not the
    first's), its replay to TensorBoard writes only those; watch_tensorboard records every
    file it is pointed at."""
    logdir, store_dir = tmp_path / "logs", tmp_path / "store"
    for run_id in ("first", "second"):
        tf2_files.run_script("keras", logdir, "--store", store_dir, "--run-id", run_id,
                             "--epochs", 4)
    everything = _epoch_points(_files_events(logdir))
    assert {"train/epoch_loss", "validation/epoch_loss"} <= set(everything)
    assert all(len(times) == 8 for times in everything.values()), everything

    store = Store.open(str(store_dir))
    for run_id in ("first", "second"):
        began = store.run(run_id).started_at
        scalars = store.scalars(run_id).to_pylist()
        epochs = {}
        for r in scalars:
            if r["tag"].split("/")[-1].startswith("epoch_"):
                epochs.setdefault(r["tag"], []).append(r["wall_time"])
        assert set(epochs) == set(everything), run_id
        assert all(len(times) == 4 for times in epochs.values()), (run_id, epochs)
        assert min(r["wall_time"] for r in scalars) >= began, run_id
        files = {r["file"] for r in store.read(run_id, "tfevents_records").to_pylist()}
        assert len(files) == 2, (run_id, files)   # its train/ and validation/ files

    out = tmp_path / "tensorboard"
    assert replay_main(["--store", str(store_dir), "--to", "tensorboard", "--out", str(out),
                        "--run", "second"]) == EXIT_OK
    replayed = _epoch_points(_files_events(out / "second"))
    assert set(replayed) == set(everything)
    began = store.run("second").started_at
    assert all(len(t) == 4 and min(t) >= began for t in replayed.values()), replayed

    recorder.init(store=str(store_dir), run_id="watched")
    recorder.watch_tensorboard(logdir)
    recorder.finish()
    watched = {}
    for r in Store.open(str(store_dir)).scalars("watched").to_pylist():
        if r["tag"].split("/")[-1].startswith("epoch_"):
            watched.setdefault(r["tag"], []).append(r["wall_time"])
    assert {t: sorted(v) for t, v in watched.items()} == {
        t: sorted(v) for t, v in everything.items()}


def test_sigkill_mid_run_leaves_a_store_that_verifies(tmp_path):
    logdir, store_dir = tmp_path / "logs", tmp_path / "store"
    proc = subprocess.Popen([sys.executable, tf2_files.SCRIPT, "loop", str(logdir), "--store",
                             str(store_dir), "--forever", "--flush-secs", "0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=tf2_files.child_env())
    try:
        deadline = time.time() + 120
        for line in proc.stdout:
            if line.startswith("flushed ") and int(line.split()[1]) >= 40:
                break
            assert time.time() < deadline, "the child never flushed"
        while time.time() < deadline:   # until 60 of the tail's rows are registered
            segs = Store.open(str(store_dir), clean_orphans=False).segments(
                "tf2", "tfevents_records")
            if sum(g.row_count for g in segs) >= 60:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert cli_main(["verify", "--store", str(store_dir)]) == 0
    store = Store.open(str(store_dir))
    rows = _store_records(store)
    assert len(rows) >= 60
    [path] = tf2_files.event_files(logdir)
    in_file = dict(tfrecord.read_records(path))
    # A kill can cut a flush short after some of its tables were registered: what is lost is
    # at most that flush. The files come back byte for byte up to the first record whose
    # decoded payload rows were in that flush; every earlier flush's records are there.
    raw_segments = sorted(store.segments("tf2", "tfevents_records"), key=lambda g: g.segment_id)
    problems = []
    [restored] = write_logdir(store, "tf2", tmp_path / "restored", problems)
    back = tfrecord.read_records(restored)
    assert len(back) >= sum(g.row_count for g in raw_segments[:-1]) and len(problems) <= 1
    assert [d for _o, d in back] == [in_file[off] for off, _d in back]
    assert [off for off, _d in back] == sorted(in_file)[:len(back)]
    # a resumed attempt reads the files again from where the store's records stop being
    # complete: afterwards every file comes back whole
    tf2_files.run_script("loop", logdir, "--store", store_dir, "--steps", 3, "--resume")
    store = Store.open(str(store_dir))
    assert len(tf2_files.event_files(logdir)) == 2
    _check_restore(store, logdir, tmp_path / "after-resume")


def test_exit_without_finish_flushes_tf_and_keeps_every_record(tmp_path):
    logdir, store_dir = tmp_path / "logs", tmp_path / "store"
    tf2_files.run_script("loop", logdir, "--store", store_dir, "--no-finish")
    store = Store.open(str(store_dir))
    assert store.run("tf2").status == "finished"
    _check_restore(store, logdir, tmp_path)


def test_a_resumed_attempt_does_not_record_a_file_twice(tmp_path):
    logdir, store_dir = tmp_path / "logs", tmp_path / "store"
    tf2_files.run_script("loop", logdir, "--store", store_dir, "--steps", 3)
    tf2_files.run_script("loop", logdir, "--store", store_dir, "--steps", 3, "--resume")
    store = Store.open(str(store_dir))
    assert len(tf2_files.event_files(logdir)) == 2
    rows = _check_restore(store, logdir, tmp_path)
    assert sorted({r["attempt"] for r in rows.values()}) == [1, 2]
    # the second attempt went on after the first's records: none was read twice
    assert store.read("tf2", "tfevents_records", latest_only=False).num_rows == len(rows)
