"""`replay --to mlflow` of a run's artifact versions (a real Keras fit with
recorder.ModelCheckpoint, tests/keras_ckpt_script.py: 3 checkpoint versions and a SavedModel
directory) into a SQLite tracking URL, read back with MLflow's own client: each version's files
sha256-equal to the store's, version.json as recorded; a second replay adds nothing; a kill
between an upload and the cursor then a rerun: each version once; --no-artifacts logs none."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tfblackbox.cli.exits import EXIT_OK
from tfblackbox.cli.main import replay_main
from tfblackbox.schema import Store

pytestmark = pytest.mark.tf   # the program it records trains with Keras

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "keras_ckpt_script.py")
RUN_ID = "Keras.Ckpt"
RUN_TAG = "tfblackbox.run_id"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-art")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": HERE}
    done = subprocess.run([sys.executable, SCRIPT, "tfblackbox", str(root / "rec"), "0"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(root))
    assert done.returncode == 0, done.stderr[-3000:]
    return str(root / "rec" / "store")


@pytest.fixture
def store(recorded, tmp_path):
    dst = str(tmp_path / "store")
    shutil.copytree(recorded, dst)
    return dst


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """MLflow's SQL stores put a new experiment's artifacts under ./mlruns by default."""
    monkeypatch.chdir(tmp_path)


def client(uri):
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=uri)


def replay(store, uri, *extra):
    return replay_main(["--store", store, "--to", "mlflow", "--tracking-uri", uri,
                        "--no-progress", *extra])


def replay_cli(store, uri, *extra, env=None):
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", store, "--to",
           "mlflow", "--tracking-uri", uri, "--no-progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, cwd=os.path.dirname(store))


def mlflow_run(c, experiment="ckpt"):
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], f"tags.`{RUN_TAG}` = '{RUN_ID}'")
    assert len(runs) == 1, runs
    return runs[0].info.run_id


def listing(c, mrun, path=None):
    out = []
    for f in c.list_artifacts(mrun, path):
        out += listing(c, mrun, f.path) if f.is_dir else [f.path]
    return sorted(out)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def assert_versions(c, mrun, store, tmp_path):
    """Every version of the store under artifacts/<name>/v<N>/, bytes and version.json as
    recorded, and nothing else under artifacts/."""
    versions = Store.open(store).artifacts(RUN_ID)
    assert len(versions) == 4   # 3 checkpoints + the SavedModel
    expected = []
    for v in versions:
        base = f"artifacts/{v.name}/v{v.version}"
        expected += [f"{base}/{f.path}" for f in v.files] + [f"{base}/version.json"]
        dst = str(tmp_path / f"dl-{v.version_id}")
        os.makedirs(dst)
        local = c.download_artifacts(mrun, base, dst)
        for f in v.files:
            assert sha256(os.path.join(local, *f.path.split("/"))) == f.sha256, f.path
        with open(os.path.join(local, "version.json")) as fh:
            info = json.load(fh)
        assert info["type"] == v.type and info["aliases"] == list(v.aliases)
        assert info["metadata"] == json.loads(json.dumps(v.metadata))
        assert info["step"] == v.step and info["time"] == v.wall_time
        assert {(f["path"], f["sha256"], f["size"]) for f in info["files"]} == \
            {(f.path, f.sha256, f.size) for f in v.files}
    assert listing(c, mrun, "artifacts") == sorted(expected)
    ckpts = [v for v in versions if v.name == f"run_{RUN_ID}_model"]
    assert [v.version for v in ckpts] == [0, 1, 2]
    assert [sorted(v.aliases) for v in ckpts] == [["epoch_0", "latest"], ["epoch_1", "latest"],
                                                  ["epoch_2", "latest"]]


def test_each_version_logged_with_its_bytes_and_version_json_then_nothing_new(store,
                                                                             tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    dry = replay_cli(store, uri, "--dry-run", "--json")
    assert dry.returncode == EXIT_OK, dry.stderr[-2000:]
    counted = json.loads(dry.stdout)["runs"][0]["artifact_versions"]
    assert counted["versions"] == 4 and counted["files"] == 3 + 4
    assert replay(store, uri) == EXIT_OK
    c = client(uri)
    mrun = mlflow_run(c)
    assert_versions(c, mrun, store, tmp_path / "first")
    before = listing(c, mrun)
    again = replay_cli(store, uri, "--json")
    assert again.returncode == EXIT_OK, again.stderr[-2000:]
    assert json.loads(again.stdout)["runs"][0]["artifacts"]["versions"] == 0
    assert listing(c, mrun) == before
    dry = replay_cli(store, uri, "--dry-run", "--json")
    assert json.loads(dry.stdout)["runs"][0]["artifact_versions"]["versions"] == 0


def test_killed_between_upload_and_cursor_then_rerun_logs_each_version_once(store, tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    killed = replay_cli(store, uri, env={"TFBLACKBOX_TEST_KILL_AT": "mlflow-artifact"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    c = client(uri)
    mrun = mlflow_run(c)
    first = Store.open(store).artifacts(RUN_ID)[0]
    assert listing(c, mrun, "artifacts") == sorted(
        [f"artifacts/{first.name}/v0/{f.path}" for f in first.files]
        + [f"artifacts/{first.name}/v0/version.json"])   # uploaded, not in the cursor
    done = replay_cli(store, uri, "--json")
    assert done.returncode == EXIT_OK, done.stderr[-2000:]
    assert json.loads(done.stdout)["runs"][0]["artifacts"]["versions"] == 4  # the first again
    assert mlflow_run(c) == mrun
    assert_versions(c, mrun, store, tmp_path / "rerun")
    again = replay_cli(store, uri, "--json")
    assert json.loads(again.stdout)["runs"][0]["artifacts"]["versions"] == 0


def test_no_artifacts_logs_none_and_a_later_replay_logs_them(store, tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    assert replay(store, uri, "--no-artifacts") == EXIT_OK
    c = client(uri)
    mrun = mlflow_run(c)
    assert listing(c, mrun, "artifacts") == []
    assert replay(store, uri) == EXIT_OK
    assert_versions(c, mrun, store, tmp_path / "later")


def test_a_missing_blob_skips_that_version_with_a_warning_and_a_later_replay_logs_it(
        store, tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    s = Store.open(store)
    first = s.artifacts(RUN_ID)[0]
    blob = s.local_artifact_path(first.files[0].sha256)
    os.rename(blob, blob + ".away")
    done = replay_cli(store, uri, "--json")
    assert done.returncode == EXIT_OK, done.stderr[-2000:]
    run = json.loads(done.stdout)["runs"][0]
    assert run["artifacts"]["versions"] == 3
    assert any(first.files[0].sha256 in w and f"{first.name}:v0" in w for w in run["warnings"])
    c = client(uri)
    mrun = mlflow_run(c)
    assert not any(p.startswith(f"artifacts/{first.name}/v0/") for p in listing(c, mrun))
    os.rename(blob + ".away", blob)
    assert replay(store, uri) == EXIT_OK
    assert_versions(c, mrun, store, tmp_path / "repaired")


@pytest.mark.long
def test_to_a_real_server_each_version_once(store, tmp_path):
    from mlflow_server import MlflowServer
    srv = MlflowServer()   # artifacts go through the server's proxy (--artifacts-destination)
    try:
        assert replay(store, srv.uri) == EXIT_OK
        assert replay(store, srv.uri) == EXIT_OK
        c = client(srv.uri)
        assert_versions(c, mlflow_run(c), store, tmp_path / "server")
    finally:
        srv.close()
