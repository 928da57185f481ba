"""`replay --to mlflow` into a real MLflow tracking server started here (127.0.0.1) and into
SQLite URLs, read back with MLflow's own client: every point with its step and timestamp,
params, tags, times, status, artifacts; kills at every point then a rerun; bad URIs, an
unreachable server and a foreign run of the same name refused before anything is written."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from tfblackbox.cli.exits import EXIT_OK, EXIT_USAGE
from tfblackbox.cli.main import replay_main
from tfblackbox.replay.mlflow.content import metric_key, safe_path
from tfblackbox.schema import SCALARS, Store

TESTS = os.path.dirname(os.path.abspath(__file__))
RUN_TAG = "tfblackbox.run_id"

RECORD = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, sys.argv[4])
    import tensorflow as tf
    import tfgraphs
    from tfblackbox import recorder
    store, run_id, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tf.compat.v1.disable_eager_execution()
    recorder.init(store=store, run_id=run_id, resume="allow", project="mlflow-test",
                  name="all-kinds", config={"lr": 0.05, "layers": [3, 2], "opt": {"m": 0.9},
                                            "long": "x" * 7000},
                  tags=["air-gapped", "test"], notes="recorded offline", group="grp")
    print("training starts")
    train_op = tfgraphs.build_all_kinds(tf)
    hooks = [recorder.SummaryHook(steps_per_log=3)]
    with tf.compat.v1.train.MonitoredTrainingSession(hooks=hooks) as sess:
        for _ in range(steps):
            sess.run(train_op)
    print("training done", file=sys.stderr)
    recorder.finish()
""")


@pytest.fixture(scope="module")
def server():
    from mlflow_server import MlflowServer
    srv = MlflowServer()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A real TF1 run of every summary kind (30 steps, logged every 3), with its console and
    system metrics samples."""
    root = tmp_path_factory.mktemp("recorded")
    store = str(root / "store")
    script = root / "record.py"
    script.write_text(RECORD)
    subprocess.run([sys.executable, str(script), store, "alpha", "30", TESTS], check=True,
                   timeout=300, capture_output=True)
    return store


@pytest.fixture
def store_copy(recorded, tmp_path):
    dst = str(tmp_path / "store")
    shutil.copytree(recorded, dst)
    return dst


def client(uri):
    from mlflow.tracking import MlflowClient
    if "://" not in uri:     # a folder: MLflow's file store wants this, as the replay sets it
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def replay(store, uri, *extra, capsys=None):
    code = replay_main(["--store", store, "--to", "mlflow", "--tracking-uri", uri,
                        "--no-progress", *extra])
    return code


def replay_cli(store, uri, *extra, env=None, timeout=300):
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", store, "--to",
           "mlflow", "--tracking-uri", uri, "--no-progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=os.path.dirname(store))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """MLflow's SQL stores put a new experiment's artifacts under ./mlruns by default."""
    monkeypatch.chdir(tmp_path)


def the_run(c, run_id, experiment):
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], f"tags.`{RUN_TAG}` = '{run_id}'")
    assert len(runs) == 1, runs
    return runs[0]


def history(c, mrun, key):
    return sorted((m.step, m.timestamp, m.value) for m in c.get_metric_history(mrun, key))


def ms(t):
    return int(round(t * 1000))


def same(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def stored_points(store, run_id):
    s = Store.open(store)
    t = s.scalars(run_id)
    out = {}
    for step, wall, tag, value in zip(*(t[c].to_pylist() for c in ("step", "wall_time", "tag",
                                                                   "value"))):
        out.setdefault(metric_key(tag), []).append((step, ms(wall), value))
    return {k: sorted(v) for k, v in out.items()}


INF = 1.7976931348623157e308   # how MLflow's SQL stores keep an infinity


def as_kept(value):
    if math.isinf(value):
        return INF if value > 0 else -INF
    return value


def assert_points(c, mrun, expected):
    for tag, points in expected.items():
        got = history(c, mrun, tag)
        assert len(got) == len(points), tag
        for (s1, t1, v1), (s2, t2, v2) in zip(got, points):
            assert (s1, t1) == (s2, t2), tag
            assert same(v1, as_kept(v2)), (tag, s1, v1, v2)


# -- a server --------------------------------------------------------------------------------

def test_replay_to_a_server_holds_everything_the_store_has(store_copy, server, tmp_path,
                                                           capsys):
    assert replay(store_copy, server.uri, "--json") == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    r = out["runs"][0]
    assert r["ok"] and r["complete"] and r["experiment"] == "mlflow-test"
    assert any("'long'" in w and "6000" in w for w in r["warnings"])
    c = client(server.uri)
    run = the_run(c, "alpha", "mlflow-test")
    assert run.info.run_id == r["mlflow_run_id"]
    record = Store.open(store_copy).run("alpha")
    # name, notes, tags, group, params
    assert run.info.run_name == "all-kinds"
    tags = run.data.tags
    assert tags["mlflow.runName"] == "all-kinds"
    assert tags["mlflow.note.content"] == "recorded offline"
    assert tags["tfblackbox.group"] == "grp" and tags["tfblackbox.project"] == "mlflow-test"
    assert tags["air-gapped"] == "" and tags["test"] == ""
    assert tags["tfblackbox.status"] == "finished"
    params = run.data.params
    assert params["lr"] == "0.05" and params["opt.m"] == "0.9" and params["layers"] == "[3, 2]"
    assert len(params["long"]) == 6000
    # times and status
    assert run.info.status == "FINISHED"
    assert run.info.start_time == ms(record.started_at)
    assert run.info.end_time == ms(record.ended_at)
    # every point, its step and timestamp (NaN and inf included)
    expected = stored_points(store_copy, "alpha")
    assert {"loss", "nan", "inf"} <= set(expected)
    odd = [t for t in Store.open(store_copy).scalars("alpha")["tag"].to_pylist()
           if metric_key(t) != t]
    assert odd and any(repr(odd[0]) in w for w in r["warnings"])   # renamed, and said so
    assert_points(c, run.info.run_id, expected)
    assert r["pushed_points"] == sum(len(v) for v in expected.values())
    # system metrics under MLflow's names, one point per sample
    samples = r["system_samples"]
    assert samples >= 2   # at init and at finish
    mem = history(c, run.info.run_id, "system/system_memory_usage_percentage")
    assert [s for s, _t, _v in mem] == list(range(samples))
    assert history(c, run.info.run_id, "system/disk_usage_percentage")
    # artifacts: histograms, images under their tag, audio, text, console, config
    names = set(_all_artifacts(c, run.info.run_id))
    assert {"console.log", "tfblackbox/config.json"} <= names
    assert any(n.startswith("histograms/weights/steps_") for n in names)
    images = sorted(n for n in names if n.startswith("images/") and "+compressed" not in n)
    media = Store.open(store_copy).media("alpha")
    n_images = sum(1 for k in media["kind"].to_pylist() if k == "image")
    assert len(images) == n_images    # one file per image, PNGs and GIFs
    assert any(n.startswith("images/picture~image~0+step+0+") for n in images)
    assert any(n.endswith(".gif") for n in images)
    folder = {"audio": "audio", "text": "text", "pr_curve": "pr_curves"}
    others = [(k, t, st) for k, t, st in zip(*(media[c].to_pylist()
                                                for c in ("kind", "tag", "step")))
              if k != "image"]
    assert {k for k, _t, _s in others} >= {"audio", "text"}
    for kind, tag, step in others:
        assert any(n.startswith(f"{folder[kind]}/{safe_path(tag)}/step_{step}.")
                   for n in names), (kind, tag, step)
    local = c.download_artifacts(run.info.run_id, "console.log", str(tmp_path))
    with open(local) as f:
        console = f.read()
    assert "training starts\n" in console and "training done\n" in console
    hist = c.download_artifacts(run.info.run_id, "histograms/weights", str(tmp_path))
    rows = [row for fn in sorted(os.listdir(hist))
            for row in json.load(open(os.path.join(hist, fn)))]
    stored = Store.open(store_copy).histograms("alpha")
    weights = [i for i, t in enumerate(stored["tag"].to_pylist()) if t == "weights"]
    assert [row["step"] for row in rows] == [stored["step"][i].as_py() for i in weights]
    assert rows[0]["bucket_counts"] == stored["bucket_counts"][weights[0]].as_py()
    assert tags["mlflow.loggedImages"] == "True"
    # a second replay adds nothing
    assert replay(store_copy, server.uri, "--json") == EXIT_OK
    again = json.loads(capsys.readouterr().out)["runs"][0]
    assert again["pushed_points"] == 0 and again["pushed_steps"] == 0
    assert again["mlflow_run_id"] == run.info.run_id
    assert_points(c, run.info.run_id, expected)
    assert len(c.search_runs([run.info.experiment_id])) == 1


def _all_artifacts(c, mrun, path=None):
    for f in c.list_artifacts(mrun, path):
        if f.is_dir:
            yield from _all_artifacts(c, mrun, f.path)
        else:
            yield f.path


# -- SQLite URLs, a folder, NaN and infinities ------------------------------------------------

def scalar_store(path, run_id="big", steps=3000, tags=4, project="kill", values=None):
    store = Store.create(path)
    store.create_run(run_id, config={"n": steps}, project=project, name=run_id)
    names = [f"m/{i}" for i in range(tags)]
    vals = values or [float(s * 10 + i) for s in range(steps) for i in range(tags)]
    table = pa.Table.from_pydict({
        "step": [s for s in range(steps) for _ in names],
        "wall_time": [1.6e9 + s * 0.25 for s in range(steps) for _ in names],
        "tag": names * steps, "attempt": [1] * (steps * tags), "value": vals}, schema=SCALARS)
    store.write_segment(run_id, "scalars", table)
    store.finish_run(run_id, 0, ended_at=1.6e9 + steps)
    return store


def test_nan_and_infinities_as_mlflow_keeps_them(tmp_path):
    weird = [float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324]
    store = str(tmp_path / "store")
    scalar_store(store, "w", steps=len(weird), tags=1, values=weird)
    uri = f"sqlite:///{tmp_path}/m.db"
    assert replay(store, uri) == EXIT_OK
    c = client(uri)
    ours = history(c, the_run(c, "w", "kill").info.run_id, "m/0")
    # the same values logged by MLflow's own client, read back the same way
    bare = c.create_run(c.get_experiment_by_name("kill").experiment_id)
    from mlflow.entities import Metric
    c.log_batch(bare.info.run_id, metrics=[Metric("m/0", v, ms(1.6e9 + s * 0.25), s)
                                           for s, v in enumerate(weird)])
    theirs = history(c, bare.info.run_id, "m/0")
    assert len(ours) == len(theirs) == len(weird)
    assert all(a[:2] == b[:2] and same(a[2], b[2]) for a, b in zip(ours, theirs))
    assert math.isnan(ours[0][2]) and ours[1][2] == INF


def test_a_local_folder_as_tracking_uri(tmp_path):
    store = str(tmp_path / "store")
    scalar_store(store, "f", steps=50, tags=2)
    folder = str(tmp_path / "mlruns")
    assert replay(store, folder) == EXIT_OK
    assert replay(store, folder) == EXIT_OK
    c = client(folder)
    run = the_run(c, "f", "kill")
    assert_points(c, run.info.run_id, stored_points(store, "f"))
    assert run.info.status == "FINISHED" and run.info.end_time == ms(1.6e9 + 50)


# -- kills -----------------------------------------------------------------------------------

KILL_POINTS = ["mlflow-created", "mlflow-pending", "mlflow-batch", "mlflow-window",
               "mlflow-finish", "mlflow-cursor"]


# the default run kills at one point per tracking-URI kind; `-m long` at every point
KILLS = [pytest.param(point, kind, marks=() if (point, kind) in (
    ("mlflow-batch", "sqlite"), ("mlflow-cursor", "folder")) else pytest.mark.long)
    for point in KILL_POINTS for kind in ("sqlite", "folder")]


@pytest.mark.parametrize("point,kind", KILLS)
def test_sigkill_at_each_point_then_rerun_writes_each_point_once(tmp_path, point, kind):
    # MLflow's SQL stores drop a point logged twice with the same value and time; its folder
    # store keeps both: there only the replay's own settling of a pending window keeps one
    store = str(tmp_path / "store")
    scalar_store(store, steps=3000)    # 12 000 rows: two windows of several log_batch calls
    uri = f"sqlite:///{tmp_path}/m.db" if kind == "sqlite" else str(tmp_path / "mlruns")
    killed = replay_cli(store, uri, env={"TFBLACKBOX_TEST_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    done = replay_cli(store, uri, "--json")
    assert done.returncode == EXIT_OK, done.stderr[-2000:]
    assert json.loads(done.stdout)["runs"][0]["cursor_after"] == 2999
    c = client(uri)
    run = the_run(c, "big", "kill")
    assert_points(c, run.info.run_id, stored_points(store, "big"))
    assert run.info.status == "FINISHED"
    again = replay_cli(store, uri, "--json")
    assert json.loads(again.stdout)["runs"][0]["pushed_points"] == 0
    assert_points(c, run.info.run_id, stored_points(store, "big"))


@pytest.mark.long
def test_sigkill_at_random_moments_against_the_server(tmp_path, server):
    store = str(tmp_path / "store")
    scalar_store(store, "rnd", steps=6000, project="kill-random")
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", store, "--to",
           "mlflow", "--tracking-uri", server.uri, "--no-progress"]
    for delay in (2.0, 3.0, 4.0, 5.0):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cwd=tmp_path)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
    done = replay_cli(store, server.uri)
    assert done.returncode == EXIT_OK, done.stderr[-2000:]
    c = client(server.uri)
    assert_points(c, the_run(c, "rnd", "kill-random").info.run_id, stored_points(store, "rnd"))


# -- resumed and live runs -------------------------------------------------------------------

def test_a_resumed_runs_attempts_go_into_one_mlflow_run(tmp_path):
    from tfblackbox import recorder
    store, uri = str(tmp_path / "store"), f"sqlite:///{tmp_path}/m.db"
    recorder.init(store=store, run_id="res", project="resume", console="off",
                  stats_interval=0)
    for s in range(10):
        recorder.log({"loss": 1.0 / (s + 1)}, step=s)
    recorder.finish()
    assert replay(store, uri) == EXIT_OK
    recorder.init(store=store, run_id="res", resume="allow", project="resume",
                  console="off", stats_interval=0)
    for s in range(10, 25):
        recorder.log({"loss": 1.0 / (s + 1)}, step=s)
    recorder.finish()
    assert replay(store, uri) == EXIT_OK
    c = client(uri)
    runs = c.search_runs([c.get_experiment_by_name("resume").experiment_id])
    assert len(runs) == 1
    assert [p[0] for p in history(c, runs[0].info.run_id, "loss")] == list(range(25))
    assert_points(c, runs[0].info.run_id, stored_points(store, "res"))
    record = Store.open(store).run("res")
    assert runs[0].info.status == "FINISHED"
    assert runs[0].info.end_time == ms(record.ended_at)


def test_a_live_run_is_running_then_finished(tmp_path, monkeypatch, capsys):
    from tfblackbox.schema.store import windows
    monkeypatch.setattr(windows, "SETTLE_SECS", 0.0)
    store, uri = str(tmp_path / "store"), f"sqlite:///{tmp_path}/m.db"
    s = Store.create(store)
    s.create_run("live", project="live", name="live")
    s.write_segment("live", "scalars", pa.Table.from_pydict(
        {"step": [0, 1], "wall_time": [time.time()] * 2, "tag": ["x", "x"], "attempt": [1, 1],
         "value": [1.0, 2.0]}, schema=SCALARS))
    assert replay(store, uri, "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out)["runs"][0]["complete"] is False
    c = client(uri)
    run = the_run(c, "live", "live")
    assert run.info.status == "RUNNING" and run.info.end_time is None
    s.write_segment("live", "scalars", pa.Table.from_pydict(
        {"step": [2], "wall_time": [time.time()], "tag": ["x"], "attempt": [1],
         "value": [3.0]}, schema=SCALARS))
    s.finish_run("live", exit_code=1)
    assert replay(store, uri) == EXIT_OK
    run = the_run(c, "live", "live")
    assert run.info.status == "FAILED"
    assert run.info.end_time == ms(Store.open(store).run("live").ended_at)
    assert [p[0] for p in history(c, run.info.run_id, "x")] == [0, 1, 2]


# -- refusals: exit 2, nothing written --------------------------------------------------------

def _nothing_written(store, run_id):
    s = Store.open(store)
    assert s.get_cursor(run_id, "x") == (None, {})
    from tfblackbox.schema.store import catalog as cat
    assert s.catalog.read(lambda ses: ses.scalars(cat.select(cat.CursorRow)).all()) == []


def test_a_bad_uri_is_refused_naming_it(tmp_path, capsys):
    store = str(tmp_path / "store")
    scalar_store(store, "b", steps=5, tags=1)
    assert replay(store, "foo://nowhere/x") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "foo://nowhere/x" in err and "'foo'" in err
    assert replay(store, f"sqlite:///{tmp_path}/no/such/dir/m.db") == EXIT_USAGE
    assert f"{tmp_path}/no/such/dir" in capsys.readouterr().err
    assert replay(store, "") == EXIT_USAGE
    assert "--tracking-uri" in capsys.readouterr().err
    _nothing_written(store, "b")
    assert not os.path.exists(tmp_path / "no")


def test_an_unreachable_server_is_refused_naming_it(tmp_path, capsys):
    from servers import free_port
    store = str(tmp_path / "store")
    scalar_store(store, "u", steps=5, tags=1)
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    assert replay(store, uri) == EXIT_USAGE
    assert time.monotonic() - t0 < 60
    assert uri in capsys.readouterr().err
    _nothing_written(store, "u")


def test_a_foreign_run_of_the_same_name_is_refused_and_nothing_is_written(tmp_path, server,
                                                                         capsys):
    store = str(tmp_path / "store")
    scalar_store(store, "mine", steps=20, tags=2, project="foreign")
    s = Store.open(store, access="write")
    s.create_run("other", project="foreign", name="other")
    s.finish_run("other", 0)
    c = client(server.uri)
    exp = c.create_experiment("foreign")
    theirs = c.create_run(exp, run_name="mine")   # someone else's run, named like ours
    assert replay(store, server.uri) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'mine'" in err and theirs.info.run_id in err and "foreign" in err
    runs = c.search_runs([exp])
    assert [r.info.run_id for r in runs] == [theirs.info.run_id]   # not even run 'other'
    assert c.get_metric_history(theirs.info.run_id, "m/0") == []
    _nothing_written(store, "mine")


def test_dry_run_writes_nothing(tmp_path, capsys):
    store = str(tmp_path / "store")
    scalar_store(store, "d", steps=30, tags=2)
    uri = f"sqlite:///{tmp_path}/m.db"
    assert replay(store, uri, "--dry-run", "--json") == EXIT_OK
    r = json.loads(capsys.readouterr().out)["runs"][0]
    assert r["would_push_steps"] == 30 and r["would_push_points"] == 60
    assert not os.path.exists(tmp_path / "m.db")
    _nothing_written(store, "d")


def test_follow_pushes_a_live_run_until_it_finishes(tmp_path):
    store, uri = str(tmp_path / "store"), f"sqlite:///{tmp_path}/m.db"
    s = Store.create(store)
    s.create_run("fol", project="follow", name="fol")

    def log(steps):
        s.write_segment("fol", "scalars", pa.Table.from_pydict(
            {"step": steps, "wall_time": [time.time()] * len(steps), "tag": ["x"] * len(steps),
             "attempt": [1] * len(steps), "value": [float(v) for v in steps]}, schema=SCALARS))

    log([0, 1, 2])
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", store, "--to",
           "mlflow", "--tracking-uri", uri, "--no-progress", "--follow", "--json"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=tmp_path, env={**os.environ, "TFBLACKBOX_FOLLOW_POLL_SECS": "0.5"})
    try:
        runs, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline:   # the first steps settle (5 s) and are pushed
            time.sleep(0.5)
            s2 = Store.open(store)
            step, state = s2.get_cursor("fol", f"mlflow:{uri}:follow")
            if step == 2:    # the replay made the database; now it can be read
                c = client(uri)
                runs = c.search_runs([c.get_experiment_by_name("follow").experiment_id])
                break
        assert runs and runs[0].info.status == "RUNNING", p.stderr and p.poll()
        assert len(history(c, runs[0].info.run_id, "x")) == 3
        log([3, 4])
        s.finish_run("fol", 0)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == EXIT_OK, err[-2000:]
    r = json.loads(out)["runs"][0]
    assert r["complete"] and r["cursor_after"] == 4
    run = the_run(c, "fol", "follow")
    assert run.info.status == "FINISHED"
    assert [p[0] for p in history(c, run.info.run_id, "x")] == [0, 1, 2, 3, 4]
