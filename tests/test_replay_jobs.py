"""`replay --jobs N`: runs replayed by N worker processes, each run by one, to W&B (offline,
read back from the .wandb logs), TensorBoard (read back with TensorBoard's reader) and MLflow
(a SQLite URL, read back with MlflowClient); a kill -9 of the whole replay or of one worker,
then a rerun: every step once; runs with artifact versions: each version once."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest

import tb_helpers
import wandb_log
from tfblackbox.cli.exits import EXIT_FAILED, EXIT_OK
from tfblackbox.schema import SCALARS, Store

RUNS = [f"r{i}" for i in range(5)]


def make_store(path, runs=RUNS, steps=400, tags=3):
    store = Store.create(path)
    names = [f"m/{i}" for i in range(tags)]
    for k, run_id in enumerate(runs):
        store.create_run(run_id, config={"k": k}, project="jobs", name=f"run-{run_id}")
        store.write_segment(run_id, "scalars", pa.Table.from_pydict({
            "step": [s for s in range(steps) for _ in names],
            "wall_time": [1.6e9 + s for s in range(steps) for _ in names],
            "tag": names * steps, "attempt": [1] * (steps * tags),
            "value": [float(k * 1e6 + s * 10 + i) for s in range(steps) for i in range(tags)]},
            schema=SCALARS))
        store.finish_run(run_id, 0)
    return store


def cli(*args, env=None, timeout=600, **kw):
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", *args]
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "WANDB_SERVICE"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def wandb_steps(wdir):
    """{W&B run id: [every _step pushed, in file order]} from every published offline dir."""
    out = {}
    for f in wandb_log.run_files(str(wdir)):
        out.setdefault(wandb_log.run_record(f).run_id, []).extend(
            row["_step"] for row in wandb_log.history(f))
    return out


def assert_each_step_once(wdir, steps=400):
    got = wandb_steps(wdir)
    assert sorted(got) == RUNS
    for run_id, pushed in got.items():
        assert sorted(pushed) == list(range(steps)), run_id


def test_wandb_jobs_push_every_run_once_and_report_as_before(tmp_path):
    store, wdir = str(tmp_path / "store"), tmp_path / "wandb"
    make_store(store)
    done = cli("--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir", str(wdir),
               "--jobs", "3")
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert_each_step_once(wdir)
    # progress per run and in total, on stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("[")]
    assert len(lines) == 5 and lines[-1].startswith("[5/5] run ")
    assert lines[-1].endswith(f"{5 * 400} step(s) in all")
    # --json as without --jobs; a second replay pushes nothing
    again = cli("--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir",
                str(wdir), "--jobs", "3", "--json")
    summary = json.loads(again.stdout)
    assert sorted(r["run_id"] for r in summary["runs"]) == RUNS
    assert all(r["ok"] and r["pushed_steps"] == 0 and r["cursor_after"] == 399
               for r in summary["runs"])
    assert set(summary) >= {"dry_run", "mode", "runs", "interrupted", "wandb_dir"}
    assert_each_step_once(wdir)


def make_artifact_store(path, files, runs=RUNS[:3], steps=50):
    """Runs recorded with recorder.log and two versions each of an artifact
    (recorder.log_artifact, as ModelCheckpoint records them): {run id: [(name, aliases,
    bytes)]} in the order they were logged."""
    from tfblackbox import recorder
    logged = {}
    for k, run_id in enumerate(runs):
        recorder.init(store=path, project="jobs", run_id=run_id, stats_interval=0,
                      console="off")
        for s in range(steps):
            recorder.log({"loss": 1.0 / (s + 1) + k}, step=s)
        for v in range(2):
            data = f"{run_id} weights {v}\n".encode() * (200 + 50 * v)
            f = files / f"{run_id}-{v}.bin"
            f.write_bytes(data)
            name, aliases = f"weights-{run_id}", [f"epoch_{v}", "latest"]
            assert recorder.log_artifact(f, name=name, type="model",
                                         aliases=aliases).wait(60) is not None
            logged.setdefault(run_id, []).append((name, sorted(aliases), data))
        recorder.finish()
    return logged


def test_wandb_jobs_log_each_artifact_version_once(tmp_path):
    store, wdir = str(tmp_path / "store"), tmp_path / "wandb"
    (tmp_path / "files").mkdir()
    logged = make_artifact_store(store, tmp_path / "files")
    done = cli("--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir", str(wdir),
               "--jobs", "2", "--json")
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert all(r["ok"] and r["artifacts"] == 2 and r["pushed_steps"] == 50
               for r in json.loads(done.stdout)["runs"])
    want = {run_id: [(n, a, [d]) for n, a, d in versions] for run_id, versions in logged.items()}
    assert wandb_log.artifacts(wdir) == want
    files = wandb_log.run_files(str(wdir))
    again = cli("--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir",
                str(wdir), "--jobs", "2", "--json")
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    assert all(r["ok"] and r["artifacts"] == 0 and r["pushed_steps"] == 0
               for r in json.loads(again.stdout)["runs"])
    assert wandb_log.run_files(str(wdir)) == files      # no chunk at all
    assert wandb_log.artifacts(wdir) == want


def _workers(pid):
    """The pids of the worker processes of the replay `pid`: forked from its fork server
    (a child of the replay), whose command line they keep; or spawned by the replay."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True,
                         text=True).stdout
    kids = {}
    for line in out.splitlines():
        p, pp, args = (line.strip().split(None, 2) + [""])[:3]
        kids.setdefault(int(pp), []).append((int(p), args))
    found = []
    for p, args in kids.get(pid, []):
        if "spawn_main" in args:
            found.append(p)
        elif "forkserver" in args:
            found += [w for w, a in kids.get(p, []) if "forkserver" in a]
    return found


# a worker killed: a long case (the default run keeps the replay itself killed)
@pytest.mark.parametrize("victim", ["replay", pytest.param("worker", marks=pytest.mark.long)])
def test_wandb_jobs_killed_then_rerun_push_each_step_once(tmp_path, victim):
    store, wdir = str(tmp_path / "store"), tmp_path / "wandb"
    make_store(store, steps=3000)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", store, "--to",
           "wandb", "--mode", "offline", "--wandb-dir", str(wdir), "--jobs", "2",
           "--no-progress"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while not wandb_log.run_files(str(wdir)) and time.monotonic() < deadline:
        time.sleep(0.2)     # the first chunk is published: the workers are mid-replay
    assert wandb_log.run_files(str(wdir)), "no chunk was published"
    if victim == "replay":
        os.killpg(p.pid, signal.SIGKILL)         # the replay and its workers
        p.wait()
        assert p.returncode == -signal.SIGKILL
    else:
        workers = _workers(p.pid)
        assert workers
        os.kill(workers[0], signal.SIGKILL)      # one worker: its runs fail, exit 1
        _out, err = p.communicate(timeout=300)
        assert p.returncode == EXIT_FAILED, err[-3000:]   # 4 of 5 runs were left: one failed
        assert "its replay worker died" in err
    subprocess.run(["pkill", "-9", "-s", str(p.pid)], capture_output=True)   # its session only
    done = cli("--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir", str(wdir),
               "--jobs", "2", "--no-progress")
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert_each_step_once(wdir, 3000)
    assert not os.listdir(wdir / ".tfblackbox-staging") if (
        wdir / ".tfblackbox-staging").exists() else True


def test_tensorboard_jobs_write_what_one_process_writes(tmp_path):
    store = str(tmp_path / "store")
    make_store(store)
    one, many = tmp_path / "one", tmp_path / "many"
    assert cli("--store", store, "--to", "tensorboard", "--out", str(one)).returncode == EXIT_OK
    done = cli("--store", store, "--to", "tensorboard", "--out", str(many), "--jobs", "3",
               "--json")
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert sorted(r["run_id"] for r in summary["runs"]) == RUNS
    assert all(r["events"] == 400 for r in summary["runs"])
    for run_id in RUNS:
        a = tb_helpers.accumulator(one / f"run-{run_id}-{run_id}")
        b = tb_helpers.accumulator(many / f"run-{run_id}-{run_id}")
        for tag in ("m/0", "m/2"):
            assert [(e.step, e.wall_time, e.value) for e in a.Scalars(tag)] == \
                [(e.step, e.wall_time, e.value) for e in b.Scalars(tag)]
            assert len(b.Scalars(tag)) == 400
    again = cli("--store", store, "--to", "tensorboard", "--out", str(many), "--jobs", "3",
                "--json")
    assert all(r["events"] == 0 for r in json.loads(again.stdout)["runs"])


@pytest.mark.long   # 20 s; the default run keeps --jobs' kill cases for W&B
def test_mlflow_jobs_push_every_point_once(tmp_path):
    from mlflow.tracking import MlflowClient
    store = str(tmp_path / "store")
    make_store(store)
    uri = f"sqlite:///{tmp_path}/m.db"
    done = cli("--store", store, "--to", "mlflow", "--tracking-uri", uri, "--jobs", "2",
               "--json", cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    results = json.loads(done.stdout)["runs"]
    assert sorted(r["run_id"] for r in results) == RUNS
    assert all(r["ok"] and r["pushed_points"] == 1200 for r in results)
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("jobs").experiment_id
    runs = c.search_runs([exp])
    assert sorted(r.data.tags["tfblackbox.run_id"] for r in runs) == RUNS
    for run in runs:
        k = int(run.data.params["k"])
        hist = sorted((m.step, m.value) for m in c.get_metric_history(run.info.run_id, "m/1"))
        assert hist == [(s, float(k * 1e6 + s * 10 + 1)) for s in range(400)]
    again = cli("--store", store, "--to", "mlflow", "--tracking-uri", uri, "--jobs", "2",
                "--json", cwd=tmp_path)
    assert all(r["pushed_points"] == 0 for r in json.loads(again.stdout)["runs"])


def test_each_destination_preloads_the_module_of_its_workers():
    """The fork server imports a destination's modules once (replay/parallel.py); a name
    that does not import is skipped there, and every worker would import it again."""
    import importlib
    from tfblackbox.replay import parallel
    assert set(parallel.PRELOAD) == {"wandb", "mlflow", "tensorboard"}
    for modules in parallel.PRELOAD.values():
        assert callable(importlib.import_module(modules[0]).work)


def test_workers_get_the_runs_with_the_most_stored_bytes_first(tmp_path):
    """A long run submitted last would be replayed alone at the end, the other cores idle."""
    from tfblackbox.replay import parallel
    store = make_store(str(tmp_path / "store"), runs=["short"], steps=20)
    for run_id, steps in (("long", 2000), ("mid", 300)):
        store.create_run(run_id, project="jobs")
        store.write_segment(run_id, "scalars", pa.Table.from_pydict({
            "step": list(range(steps)), "wall_time": [1.6e9 + s for s in range(steps)],
            "tag": ["m/0"] * steps, "attempt": [1] * steps,
            "value": [float(s) for s in range(steps)]}, schema=SCALARS))
        store.finish_run(run_id, 0)
    records = store.runs()
    ordered = parallel.longest_first(store, records)
    assert [r.run_id for r in ordered] == ["long", "mid", "short"]
    assert sorted(r.run_id for r in records) == ["long", "mid", "short"]
