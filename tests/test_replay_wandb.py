"""`replay --to wandb` with real TensorFlow recordings and real wandb in offline mode, read back
through the run-*.wandb transaction log (tests/wandb_log.py)."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow as pa
import pytest
from helpers import child_env

import no_tensorflow
import wandb_log
from tfblackbox.cli.main import replay_main
from tfblackbox.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tfblackbox.schema import SCALARS, Store

TESTS = os.path.dirname(os.path.abspath(__file__))

RECORD = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, sys.argv[5])
    import tensorflow as tf
    import tfgraphs
    from tfblackbox import recorder
    store, run_id, steps, ckpt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    tf.compat.v1.disable_eager_execution()
    recorder.init(store=store, run_id=run_id, resume="allow", project="replay-test",
                  name="all-kinds", config={"lr": 0.05, "layers": [3, 2], "opt": {"m": 0.9}},
                  tags=["air-gapped", "test"], notes="recorded offline", group="grp")
    train_op = tfgraphs.build_all_kinds(tf)
    hooks = [recorder.SummaryHook(steps_per_log=3)]
    with tf.compat.v1.train.MonitoredTrainingSession(checkpoint_dir=ckpt or None,
                                                     hooks=hooks) as sess:
        for _ in range(steps):
            sess.run(train_op)
    recorder.finish()
""")


def record(store, run_id, steps, ckpt="", tmp=None):
    script = os.path.join(tmp or os.path.dirname(store), "record_all_kinds.py")
    with open(script, "w") as f:
        f.write(RECORD)
    subprocess.run([sys.executable, script, store, run_id, str(steps), ckpt, TESTS], check=True,
                   timeout=240)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A real TF run with every kind of summary (30 steps, logged every 3)."""
    root = tmp_path_factory.mktemp("recorded")
    store = str(root / "store")
    record(store, "alpha", 30)
    return store


@pytest.fixture
def store_copy(recorded, tmp_path):
    """A private copy of the recorded store (cursors live in its catalog)."""
    dst = str(tmp_path / "store")
    shutil.copytree(recorded, dst)
    return dst


def replay(store, wandb_dir, *extra):
    return replay_main(["--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir",
                        str(wandb_dir), "--no-progress", *extra])


def replay_cli(store, wandb_dir, *extra, env=None, timeout=120):
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", store, "--to",
           "wandb", "--mode", "offline", "--wandb-dir", str(wandb_dir), "--no-progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=child_env(**(env or {})))




def all_history(wandb_dir):
    """(file, row) for every history row of every run file under wandb_dir."""
    return [(f, row) for f in wandb_log.run_files(str(wandb_dir))
            for row in wandb_log.history(f)]


def store_steps(store, run_id):
    s = Store.open(store, clean_orphans=False)
    steps = set()
    for table in ("scalars", "histograms", "media"):
        steps.update(s.read(run_id, table, columns=["step"])["step"].to_pylist())
    return sorted(steps)


def same(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


# -- mapping --------------------------------------------------------------------------------

def test_replay_matches_the_store(store_copy, tmp_path, capsys):
    wdir = tmp_path / "wandb"
    assert replay(store_copy, wdir) == EXIT_OK
    assert "wandb sync" in capsys.readouterr().out
    files = wandb_log.run_files(str(wdir))
    assert len(files) == 1 and os.path.basename(os.path.dirname(files[0])).startswith(
        "offline-run-") and os.path.dirname(os.path.dirname(files[0])) == str(wdir)
    f = files[0]
    store = Store.open(store_copy, clean_orphans=False)
    rec = store.run("alpha")
    hist = wandb_log.history(f)
    steps = [r["_step"] for r in hist]
    assert steps == store_steps(store_copy, "alpha") and steps == sorted(set(steps))
    by_step = {r["_step"]: r for r in hist}

    scalars = store.scalars("alpha")
    wall = {}
    for t in ("scalars", "histograms", "media"):
        tab = store.read("alpha", t, columns=["step", "wall_time"])
        for st, w in zip(tab["step"].to_pylist(), tab["wall_time"].to_pylist()):
            wall[st] = min(w, wall.get(st, w))
    for st, tag, value in zip(*(scalars[c].to_pylist() for c in ("step", "tag", "value"))):
        assert same(by_step[st][tag], value), (st, tag)
    for st, row in by_step.items():
        assert row["_timestamp"] == wall[st]

    row = by_step[steps[-1]]
    assert row["picture/image/0"]["_type"] == "image-file"
    assert (row["picture/image/0"]["width"], row["picture/image/0"]["height"]) == (5, 6)
    assert row["anim"]["_type"] == "video-file"
    assert row["sound/audio/0"]["_type"] == "audio-file"
    assert row["note"]["_type"] == "html-file"
    assert row["curve"]["_type"] == "table-file"
    for tag in ("weights", "noise", "v2hist"):
        h = row[tag]
        assert h["_type"] == "histogram" and len(h["bins"]) == len(h["values"]) + 1 <= 513
        assert h["bins"] == sorted(h["bins"]) and all(abs(b) < 1e300 for b in h["bins"])
    hs = store.histograms("alpha")
    last = {t: c for t, c in zip(hs["tag"].to_pylist(), hs["bucket_counts"].to_pylist())}
    assert sum(row["noise"]["values"]) == sum(last["noise"]) == 200
    media_dir = os.path.join(os.path.dirname(f), "files")
    for key in ("picture/image/0", "anim", "sound/audio/0", "note"):
        assert os.path.isfile(os.path.join(media_dir, row[key]["path"])), key
    assert "matrix" not in row    # other tensors need TensorFlow to decode: not pushed

    assert wandb_log.config(f) == rec.config == {"lr": 0.05, "layers": [3, 2],
                                                 "opt": {"m": 0.9}}
    run = wandb_log.run_record(f)
    assert (run.run_id, run.display_name, list(run.tags), run.notes, run.run_group,
            run.project) == ("alpha", "all-kinds", ["air-gapped", "test"], "recorded offline",
                             "grp", "replay-test")
    summary = wandb_log.summary(f)
    final = {t: v for t, v in zip(scalars["tag"].to_pylist(), scalars["value"].to_pylist())}
    assert all(same(summary[t], v) for t, v in final.items())
    assert summary["tfblackbox/status"] == "finished" and wandb_log.exit_code(f) == 0
    step, state = store.get_cursor("alpha", f"wandb-offline:/replay-test:{os.path.realpath(wdir)}")
    assert step == steps[-1] and not state.get("pending")


def test_windowed_replay_logs_the_same_history(store_copy, tmp_path, monkeypatch):
    """A replay reads the store a window of steps at a time (memory stays flat); tiny windows
    must give the same history, step for step, as one big window."""
    from tfblackbox.replay.wandb import plan_rows, rows as wandb_rows, timeline
    whole = str(tmp_path / "whole")
    shutil.copytree(store_copy, whole)
    assert replay(whole, tmp_path / "w1") == EXIT_OK
    monkeypatch.setattr(wandb_rows, "WINDOW_ROWS", 7)
    s = Store.open(store_copy)
    plan = timeline.plan_chunk(s, s.run("alpha"), None, {})
    assert len(list(plan_rows.iter_batches(s, "alpha", plan))) > 5
    assert replay(store_copy, tmp_path / "w2") == EXIT_OK

    def simple(wdir):
        [f] = wandb_log.run_files(str(wdir))
        return [{k: (v if not isinstance(v, dict) else v["_type"]) for k, v in row.items()
                 if k != "_runtime"} for row in wandb_log.history(f)]
    one, many = simple(tmp_path / "w1"), simple(tmp_path / "w2")
    assert len(one) == len(store_steps(store_copy, "alpha")) and len(one) == len(many)
    for a, b in zip(one, many):
        assert a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def test_second_replay_pushes_nothing_and_dry_run_writes_nothing(store_copy, tmp_path, capsys):
    wdir = tmp_path / "wandb"
    assert replay(store_copy, wdir, "--dry-run", "--json") == EXIT_OK
    plan = json.loads(capsys.readouterr().out)["runs"][0]
    assert not wdir.exists()
    assert plan["would_push_steps"] == len(store_steps(store_copy, "alpha")) == 10
    assert plan["rows"]["media_by_kind"] == {"image": 30, "audio": 10, "text": 10,
                                             "pr_curve": 10}
    assert "loss" in plan["tags"]["scalars"] and plan["cursor"] is None
    assert replay(store_copy, wdir) == EXIT_OK
    files = wandb_log.run_files(str(wdir))
    capsys.readouterr()
    assert replay(store_copy, wdir, "--json") == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["runs"][0]["pushed_steps"] == 0 and out["runs"][0]["chunks"] == []
    assert wandb_log.run_files(str(wdir)) == files
    assert replay(store_copy, wdir, "--dry-run", "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out)["runs"][0]["would_push_steps"] == 0


def test_replay_after_more_training_pushes_only_new_steps(tmp_path):
    store, ckpt = str(tmp_path / "store"), str(tmp_path / "ckpt")
    wdir = tmp_path / "wandb"
    record(store, "grow", 12, ckpt)
    assert replay(store, wdir) == EXIT_OK
    first = wandb_log.run_files(str(wdir))
    assert [r["_step"] for _, r in all_history(wdir)] == [0, 3, 6, 9]
    record(store, "grow", 12, ckpt)     # resumed from the checkpoint: steps 12..23
    assert replay(store, wdir) == EXIT_OK
    files = wandb_log.run_files(str(wdir))
    assert len(files) == 2 and first[0] in files
    new = [f for f in files if f not in first][0]
    assert [r["_step"] for r in wandb_log.history(new)] == [12, 15, 18, 21]
    steps = [r["_step"] for _, r in all_history(wdir)]
    assert sorted(steps) == store_steps(store, "grow") and len(steps) == len(set(steps))
    assert wandb_log.run_record(new).run_id == "grow"


# -- kills ----------------------------------------------------------------------------------

def scalar_store(path, run_id="big", steps=3000, tags=4):
    store = Store.create(path)
    store.create_run(run_id, config={"n": steps}, project="kill")
    names = [f"m/{i}" for i in range(tags)]
    table = pa.Table.from_pydict({
        "step": [s for s in range(steps) for _ in names],
        "wall_time": [1.6e9 + s for s in range(steps) for _ in names],
        "tag": names * steps, "attempt": [1] * (steps * tags),
        "value": [float(s * 10 + i) for s in range(steps) for i in range(tags)]}, schema=SCALARS)
    store.write_segment(run_id, "scalars", table)
    store.finish_run(run_id, 0)
    return store


def assert_exactly_once(wdir, expected_steps):
    steps = [r["_step"] for _, r in all_history(wdir)]
    assert sorted(steps) == expected_steps and len(steps) == len(set(steps))
    assert not os.listdir(os.path.join(wdir, ".tfblackbox-staging")) if os.path.isdir(
        os.path.join(wdir, ".tfblackbox-staging")) else True


@pytest.mark.parametrize("point", ["init", "log", "finish", "publish"])
def test_sigkill_at_each_point_then_rerun_leaves_every_step_once(tmp_path, point):
    store = str(tmp_path / "store")
    scalar_store(store, steps=400)
    wdir = tmp_path / "wandb"
    killed = replay_cli(store, wdir, env={"TFBLACKBOX_TEST_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    published = wandb_log.run_files(str(wdir))
    assert len(published) == (1 if point == "publish" else 0)
    done = replay_cli(store, wdir, "--json")
    assert done.returncode == EXIT_OK, done.stderr
    result = json.loads(done.stdout)["runs"][0]
    assert result["pushed_steps"] == (0 if point == "publish" else 400)
    assert result["cursor_after"] == 399
    assert_exactly_once(wdir, list(range(400)))
    assert not os.listdir(wdir / ".tfblackbox-staging") if (wdir / ".tfblackbox-staging").exists() \
        else True


@pytest.mark.long   # 22 s; the default run keeps the kill at each named point above
def test_sigkill_at_random_moments_then_rerun(tmp_path):
    store = str(tmp_path / "store")
    scalar_store(store, steps=3000)
    wdir = tmp_path / "wandb"
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", store, "--to",
           "wandb", "--mode", "offline", "--wandb-dir", str(wdir), "--no-progress"]
    for delay in (0.4, 1.0, 1.6, 2.2):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=child_env())
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert replay_cli(store, wdir).returncode == EXIT_OK
    assert_exactly_once(wdir, list(range(3000)))
    assert replay_cli(store, wdir).returncode == EXIT_OK
    assert_exactly_once(wdir, list(range(3000)))


# -- run states, follow ---------------------------------------------------------------------

def test_failed_and_died_runs_are_marked(tmp_path):
    store = scalar_store(str(tmp_path / "store"), "bad", steps=5)
    store.finish_run("bad", exit_code=3)
    scalar_store_run = store.create_run("dead", project="kill")
    assert scalar_store_run.status == "running"
    store.write_segment("dead", "scalars", pa.Table.from_pydict(
        {"step": [0, 1], "wall_time": [1.0, 2.0], "tag": ["x", "x"], "attempt": [1, 1],
         "value": [1.0, 2.0]}, schema=SCALARS))
    from tfblackbox.schema.store import catalog as cat
    with store.catalog.session() as s:     # its recorder died long ago
        s.get(cat.RunRow, "dead").heartbeat_at = time.time() - 3600
    wdir = tmp_path / "wandb"
    assert replay(store.root, wdir) == EXIT_OK
    by_run = {wandb_log.run_record(f).run_id: f for f in wandb_log.run_files(str(wdir))}
    assert wandb_log.exit_code(by_run["bad"]) == 3
    assert wandb_log.summary(by_run["bad"])["tfblackbox/status"] == "failed"
    assert wandb_log.exit_code(by_run["dead"]) == 1
    assert wandb_log.summary(by_run["dead"])["tfblackbox/status"] == "died"
    assert [r["_step"] for r in wandb_log.history(by_run["dead"])] == [0, 1]


def test_a_live_run_with_nothing_to_push_says_it_is_still_recording(tmp_path, capsys):
    """A run still recording (its record `running`, its heartbeat fresh) with nothing new to
    push is not "up to date": the replay says it is still recording, how far it has been
    recorded and pushed, and names --follow (issue 23, item 5)."""
    from tfblackbox.schema.store import catalog as cat
    store = Store.create(str(tmp_path / "store"))
    store.create_run("live", project="live")
    wdir = tmp_path / "wandb"

    def says():
        assert replay(store.root, wdir) == EXIT_OK
        out = capsys.readouterr().out
        assert "up to date" not in out and "cursor None" not in out, out
        return out

    def logged(steps):
        store.write_segment("live", "scalars", pa.Table.from_pydict(
            {"step": steps, "wall_time": [100.0 + k for k in steps], "tag": ["loss"] * len(steps),
             "attempt": [1] * len(steps), "value": [float(k) for k in steps]}, schema=SCALARS))

    def settled():   # its segments registered 11 s ago, past the settling time (2 x 5 s)
        with store.catalog.session(write=True) as s:
            for seg in s.scalars(cat.select(cat.SegmentRow)):
                seg.created_at -= 11

    follow = "replay again later, or with --follow to keep pushing until it finishes"
    assert says() == ("run live: still recording, nothing to push yet: nothing recorded yet; "
                      f"{follow}\n")
    logged([0, 1, 2, 3, 4])             # just registered: recorded, not settled
    assert says() == ("run live: still recording, nothing to push yet: steps up to 4 recorded, "
                      "none settled yet (a step is pushed once its rows have been registered "
                      f"for 10 s); {follow}\n")
    settled()
    out = says()
    assert "run live: pushed 5 step(s) (steps 0..4, running)" in out and "--follow" in out
    assert [r["_step"] for _, r in all_history(wdir)] == [0, 1, 2, 3, 4]   # real wandb, offline
    assert says() == (f"run live: still recording, nothing to push yet: steps up to 4 pushed; "
                      f"{follow}\n")
    logged([5, 6])
    assert "steps up to 4 pushed, up to 6 recorded, none newer settled yet" in says()
    assert replay(store.root, wdir, "--json") == EXIT_OK
    [r] = json.loads(capsys.readouterr().out)["runs"]
    assert (r["state"], r["cursor_after"], r["recorded_step"], r["settled_step"],
            r["pushed_steps"], r["complete"]) == ("running", 4, 6, 4, 0, False)
    store.finish_run("live", 0)
    settled()
    assert "pushed 2 step(s) (steps 5..6, finished)" in says()
    assert replay(store.root, wdir) == EXIT_OK
    assert capsys.readouterr().out == "run live: up to date (steps up to 6 pushed)\n"


def test_follow_pushes_a_live_run_until_it_finishes(tmp_path):
    store = Store.create(str(tmp_path / "store"))
    store.create_run("live", project="follow")

    def train():
        for k in range(4):
            store.write_segment("live", "scalars", pa.Table.from_pydict(
                {"step": [k], "wall_time": [100.0 + k], "tag": ["loss"], "attempt": [1],
                 "value": [float(k)]}, schema=SCALARS))
            time.sleep(0.4)
        store.finish_run("live", 0)

    t = threading.Thread(target=train)
    t.start()
    wdir = tmp_path / "wandb"
    done = replay_cli(store.root, wdir, "--follow", "--json",
                      env={"TFBLACKBOX_FOLLOW_POLL_SECS": "0.5"})
    t.join()
    assert done.returncode == EXIT_OK, done.stderr
    result = json.loads(done.stdout)["runs"][0]
    assert result["complete"] and result["state"] == "finished" and result["cursor_after"] == 3
    assert_exactly_once(wdir, [0, 1, 2, 3])
    assert [r["_timestamp"] for _, r in sorted(all_history(wdir), key=lambda x: x[1]["_step"])] \
        == [100.0, 101.0, 102.0, 103.0]


# -- no TensorFlow, bad input -----------------------------------------------------------------

def test_replay_never_imports_tensorflow(store_copy, tmp_path):
    env, attempts = no_tensorflow.shim(tmp_path)
    done = replay_cli(store_copy, tmp_path / "wandb", "--json", env=env)
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout)["runs"][0]["pushed_steps"] == 10
    assert not attempts.exists(), attempts.read_text()
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                           env=child_env(**env))
    assert probe.returncode != 0 and attempts.exists()   # the shim does block TensorFlow


def test_unknown_run_and_empty_store_are_refused(store_copy, tmp_path, capsys):
    wdir = tmp_path / "wandb"
    assert replay(store_copy, wdir, "--run", "nope") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'nope'" in err and "alpha" in err
    empty = str(tmp_path / "empty")
    Store.create(empty)
    assert replay(empty, wdir) == EXIT_USAGE
    assert "holds no runs" in capsys.readouterr().err
    assert replay(str(tmp_path / "missing"), wdir) == EXIT_USAGE
    assert not wdir.exists()


def test_online_without_credentials_is_refused_and_moves_no_cursor(store_copy, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / "no-netrc"), WANDB_SILENT="true",
               WANDB_BASE_URL="http://127.0.0.1:9", WANDB_CONFIG_DIR=str(tmp_path / "cfg"))
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", store_copy,
           "--to", "wandb", "--mode", "online", "--wandb-dir", str(tmp_path / "wandb")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == EXIT_USAGE
    assert "credentials" in done.stderr and "wandb login" in done.stderr
    store = Store.open(store_copy, clean_orphans=False)
    assert store.get_cursor("alpha", "wandb:/replay-test") == (None, {})
    assert not (tmp_path / "wandb").exists()


def test_a_chunk_that_wandb_refuses_fails_with_exit_1_and_keeps_the_cursor(store_copy, tmp_path,
                                                                         capsys):
    wdir = tmp_path / "wandb"
    assert replay(store_copy, wdir, "--project", "bad/name") == EXIT_FAILED
    assert "Invalid project name" in capsys.readouterr().err
    assert wandb_log.run_files(str(wdir)) == []
    store = Store.open(store_copy, clean_orphans=False)
    dest = f"wandb-offline:/bad/name:{os.path.realpath(wdir)}"
    assert store.get_cursor("alpha", dest) == (None, {})
    assert replay(store_copy, wdir) == EXIT_OK        # the next replay cleans up and pushes
    assert not os.listdir(wdir / ".tfblackbox-staging") if (wdir / ".tfblackbox-staging").exists() \
        else True
    assert len(all_history(wdir)) == 10


# -- the reader -----------------------------------------------------------------------------

def test_reader_tolerates_a_truncated_log(store_copy, tmp_path):
    wdir = tmp_path / "wandb"
    assert replay(store_copy, wdir) == EXIT_OK
    f = wandb_log.run_files(str(wdir))[0]
    full = list(wandb_log.read_payloads(f))
    cut = tmp_path / "cut.wandb"
    data = open(f, "rb").read()
    cut.write_bytes(data[:len(data) * 2 // 3])
    part = list(wandb_log.read_payloads(str(cut)))
    assert 0 < len(part) < len(full) and part == full[:len(part)]
    (tmp_path / "bad.wandb").write_bytes(b"NOPE" + data[4:100])
    with pytest.raises(wandb_log.WandbLogError):
        list(wandb_log.read_payloads(str(tmp_path / "bad.wandb")))
