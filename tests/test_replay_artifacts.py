"""Artifacts replayed to W&B are the ones W&B records itself: the same Keras program
(tests/keras_ckpt_script.py: 3 epochs, a checkpoint callback, a SavedModel directory logged as
an artifact) run once under `wandb.init(mode="offline")` + WandbModelCheckpoint +
`wandb.log_artifact`, and once under `recorder.init` + recorder.ModelCheckpoint +
`recorder.log_artifact` and replayed with `replay --to wandb --mode offline`. The artifact
records of the two `.wandb` transaction logs are compared: the same versions in the same
order (names modulo the run id, types, aliases, file names, metadata, the manifest's format),
each replayed file's digest that of the file the training wrote, each manifest digest the one
wandb computes for the training's files, and each file where `wandb sync` reads it.

What may differ, and why: the run ids (the recorder's run id is not a W&B id as is, so the
replayed run has another id and the names follow it: replay/wandb/naming.py); the file bytes
and sizes of the two programs' checkpoints (a .keras file holds the time it was saved), so the
digests are checked against each program's own files; the files' `local_path` (W&B's own run
copies them into wandb's staging folder, the replay links them into the published chunk).

Exactly once: a `--follow` replay during training, a second replay, replays killed at the
moments that matter and run again each log every version once; `--no-artifacts` logs none
and a later replay logs them; a store whose data is on S3, and a --wandb-dir on another file
system (no hard link possible), give the same digests.
"""

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

import wandb_log
from helpers import train_while_following
from tfblackbox.cli.exits import EXIT_OK
from tfblackbox.cli.main import main as cli, replay_main
from tfblackbox.replay.wandb.naming import wandb_run_id
from tfblackbox.schema import Store

pytestmark = pytest.mark.tf   # the programs it runs train with Keras

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "keras_ckpt_script.py")
RUN_ID = "Keras.Ckpt"
WANDB_ID = wandb_run_id(RUN_ID)
PAUSE = 2.0       # seconds after each epoch: long enough for --follow to see versions come
CHECKPOINTS = [("model-01.keras", ["epoch_0", "latest"]),
               ("model-02.keras", ["epoch_1", "latest"]),
               ("model-03.keras", ["epoch_2", "latest"])]
SAVED = ["fingerprint.pb", "saved_model.pb", "variables/variables.data-00000-of-00001",
         "variables/variables.index"]


def child_env(root, **extra):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    # wandb's own staging copies go to the test's folder, not the user's
    env.update(WANDB_SILENT="true", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=HERE,
               WANDB_DATA_DIR=str(root / "wandb-data"), **extra)
    return env


def run_files(wandb_dir):
    """The run logs under a dir (wandb's `latest-run` link counted once)."""
    return sorted({os.path.realpath(f) for f in wandb_log.run_files(str(wandb_dir))})


def replay_cli(root, store, wandb_dir, *extra, env=None):
    cmd = [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", store, "--to",
           "wandb", "--mode", "offline", "--wandb-dir", str(wandb_dir), "--no-progress",
           "--json", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=child_env(root, **(env or {})), cwd=str(root))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    own = subprocess.run([sys.executable, SCRIPT, "wandb", str(root / "own"), "0"],
                         capture_output=True, text=True, timeout=300, env=child_env(root),
                         cwd=str(root))
    assert own.returncode == 0, own.stderr[-3000:]

    out = root / "rec"
    store = str(out / "store")
    followed = train_while_following(SCRIPT, ["tfblackbox", out, PAUSE], store, root / "follow",
                                     root, child_env(root),
                                     child_env(root, TFBLACKBOX_FOLLOW_POLL_SECS="0.5"))
    # a pristine copy for the tests that replay again (cursors live in the catalog)
    shutil.copytree(store, str(root / "pristine"))
    done = replay_cli(root, store, root / "once")
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    [own_file] = run_files(root / "own")
    [once_file] = run_files(root / "once")
    return {"root": root, "store": store, "own": own_file, "once": once_file,
            "once_result": json.loads(done.stdout)["runs"][0],
            "follow": run_files(root / "follow"),
            "follow_result": json.loads(followed)["runs"][0]}


# -- reading the logs ---------------------------------------------------------------------

def artifacts_in(*paths):
    return [r.artifact for p in paths for r in wandb_log.read_records(p)
            if r.WhichOneof("record_type") == "artifact"]


def shape(art, run_id):
    """What must be equal between W&B's own record and the replayed one."""
    m = art.manifest
    return {"name": art.name.replace(run_id, "<id>"), "type": art.type,
            "aliases": sorted(art.aliases), "files": [e.path for e in m.contents],
            "metadata": art.metadata, "finalize": art.finalize,
            "digest_algorithm": art.digest_algorithm, "manifest_version": m.version,
            "storage_policy": m.storage_policy,
            "policy_config": {c.key: c.value_json for c in m.storage_policy_config}}


def b64md5(path):
    with open(path, "rb") as f:
        return base64.b64encode(hashlib.md5(f.read()).digest()).decode()


def training_file(out, art, entry):
    """The file the training wrote that a manifest entry stands for."""
    folder = "ckpt" if art.name.endswith("_model") else "saved"
    return os.path.join(out, folder, entry.path)


def wandb_digest(out, art):
    """The manifest digest wandb computes for the training's own files."""
    import wandb
    a = wandb.Artifact(art.name, type=art.type)
    for e in art.manifest.contents:
        a.add_file(training_file(out, art, e), name=e.path, policy="immutable")
    return a.digest


def keys(arts):
    """(name, sorted aliases, [(path, digest)]) of each version, in order."""
    return [(a.name, sorted(a.aliases), [(e.path, e.digest) for e in a.manifest.contents])
            for a in arts]


def assert_files_uploadable(arts, out, wandb_dir):
    """Each entry's local file (what `wandb sync` uploads) is in a published chunk of
    wandb_dir, holds the training's bytes, and has the entry's digest and size."""
    for art in arts:
        for e in art.manifest.contents:
            assert e.local_path.startswith(os.path.join(str(wandb_dir), "offline-run-"))
            assert b64md5(e.local_path) == e.digest == b64md5(training_file(out, art, e))
            assert os.path.getsize(e.local_path) == e.size


# -- W&B's own against the replay ---------------------------------------------------------

def test_replayed_artifacts_equal_wandbs_own(runs):
    own_id = wandb_log.run_record(runs["own"]).run_id
    own, rep = artifacts_in(runs["own"]), artifacts_in(runs["once"])
    assert [shape(a, own_id) for a in own] == [shape(a, WANDB_ID) for a in rep]
    # what both are: three checkpoints with WandbModelCheckpoint's names and aliases, then
    # the SavedModel directory under log_artifact's default name
    assert [(shape(a, WANDB_ID)["name"], sorted(a.aliases), [e.path for e in a.manifest.contents])
            for a in rep] == [("run_<id>_model", aliases, [f]) for f, aliases in CHECKPOINTS] + [
        ("run-<id>-saved", ["latest"], SAVED)]
    assert WANDB_ID != RUN_ID and all(WANDB_ID in a.name and a.run_id == WANDB_ID for a in rep)
    # digests: each file's that of the file the training wrote, each manifest's the one
    # wandb computes for those files (so W&B's own of the same bytes would be equal)
    rec_out = str(runs["root"] / "rec")
    for art in rep:
        for e in art.manifest.contents:
            assert e.digest == b64md5(training_file(rec_out, art, e))
        assert art.digest == wandb_digest(rec_out, art)
    own_out = str(runs["root"] / "own")
    for art in own:   # the yardstick is what the test says it is
        assert art.digest == wandb_digest(own_out, art)
    assert_files_uploadable(rep, rec_out, runs["root"] / "once")
    assert runs["once_result"]["artifacts"] == 4


def test_the_store_keeps_its_blobs_whole(runs):
    """The chunk's files are hard links of the blobs (no bytes copied), and the blobs are
    untouched by the replays."""
    store = Store.open(runs["store"])
    versions = store.artifacts(RUN_ID)
    assert len(versions) == 4
    [art] = [a for a in artifacts_in(runs["once"]) if a.name.endswith("-saved")]
    blob = store.local_artifact_path(versions[-1].files[0].sha256)
    assert os.path.samefile(art.manifest.contents[0].local_path, blob)
    for v in versions:
        for f in v.files:
            with store.open_artifact_file(f.sha256) as src:
                assert hashlib.sha256(src.read()).hexdigest() == f.sha256


def test_follow_during_training_logs_each_version_once(runs):
    result = runs["follow_result"]
    assert result["ok"] and result["complete"] and result["artifacts"] == 4
    followed = artifacts_in(*runs["follow"])
    assert keys(followed) == keys(artifacts_in(runs["once"]))
    # pushed while the run trained: the versions came in more than one chunk
    per_chunk = [len(artifacts_in(f)) for f in runs["follow"]]
    assert sum(1 for n in per_chunk if n) >= 2, per_chunk
    assert_files_uploadable(followed, str(runs["root"] / "rec"), runs["root"] / "follow")


def test_a_second_replay_logs_nothing(runs):
    root = runs["root"]
    again = replay_cli(root, runs["store"], root / "once")
    assert again.returncode == EXIT_OK, again.stderr[-3000:]
    assert json.loads(again.stdout)["runs"][0]["artifacts"] == 0
    assert run_files(root / "once") == [runs["once"]]


# -- kills ----------------------------------------------------------------------------------

@pytest.mark.parametrize("point", ["artifacts", "publish"])
def test_a_killed_replay_run_again_logs_each_version_once(runs, tmp_path, point):
    """Killed after logging the versions (the chunk not published: they go again, once) or
    after publishing them (the cursor not moved: the next replay settles it, logs none)."""
    root = runs["root"]
    store = str(tmp_path / "store")
    shutil.copytree(str(root / "pristine"), store)
    wdir = tmp_path / "wandb"
    killed = replay_cli(root, store, wdir, env={"TFBLACKBOX_TEST_KILL_AT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert len(run_files(wdir)) == (1 if point == "publish" else 0)
    done = replay_cli(root, store, wdir)
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    assert json.loads(done.stdout)["runs"][0]["artifacts"] == (0 if point == "publish" else 4)
    arts = artifacts_in(*run_files(wdir))
    assert keys(arts) == keys(artifacts_in(runs["once"]))
    assert_files_uploadable(arts, str(root / "rec"), wdir)
    assert not os.listdir(wdir / ".tfblackbox-staging") if (wdir / ".tfblackbox-staging"
                                                            ).exists() else True


# -- --no-artifacts, dry run ----------------------------------------------------------------

def test_no_artifacts_logs_none_and_a_later_replay_logs_them(runs, tmp_path, capsys):
    root = runs["root"]
    store = str(tmp_path / "store")
    shutil.copytree(str(root / "pristine"), store)
    wdir = tmp_path / "wandb"
    args = ["--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir", str(wdir),
            "--no-progress"]
    assert replay_main(args + ["--no-artifacts"]) == EXIT_OK
    [first] = run_files(wdir)
    assert artifacts_in(first) == [] and wandb_log.exit_code(first) == 0
    capsys.readouterr()
    assert replay_main(args + ["--dry-run", "--json"]) == EXIT_OK
    [planned] = json.loads(capsys.readouterr().out)["runs"]
    assert planned["artifacts"]["versions"] == 4 and planned["artifacts"]["files"] == 7
    assert replay_main(args) == EXIT_OK
    arts = artifacts_in(*run_files(wdir))
    assert keys(arts) == keys(artifacts_in(runs["once"]))
    capsys.readouterr()
    assert replay_main(args + ["--dry-run", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["runs"][0]["artifacts"]["versions"] == 0


# -- where a hard link cannot be made --------------------------------------------------------

def test_a_wandb_dir_on_another_file_system_gets_copies(runs, tmp_path):
    shm = "/dev/shm"
    if not os.path.isdir(shm) or os.stat(shm).st_dev == os.stat(str(tmp_path)).st_dev:
        pytest.skip("no second file system (/dev/shm) to replay into")
    root = runs["root"]
    store = str(tmp_path / "store")
    shutil.copytree(str(root / "pristine"), store)
    import tempfile
    wdir = tempfile.mkdtemp(dir=shm, prefix="tfblackbox-test-")
    try:
        assert replay_cli(root, store, wdir).returncode == EXIT_OK
        arts = artifacts_in(*run_files(wdir))
        assert keys(arts) == keys(artifacts_in(runs["once"]))
        assert_files_uploadable(arts, str(root / "rec"), wdir)
        assert all(os.stat(e.local_path).st_nlink == 1 for a in arts
                   for e in a.manifest.contents)
    finally:
        shutil.rmtree(wdir, ignore_errors=True)


def test_a_store_with_its_data_on_s3(runs, tmp_path, s3, s3_data):
    root = runs["root"]
    into = str(tmp_path / "s3store")
    assert cli(["merge", str(root / "pristine"), "--into", into, "--data", s3_data]) == EXIT_OK
    assert Store.open(into).local_artifact_path(
        Store.open(into).artifacts(RUN_ID)[0].files[0].sha256) is None
    wdir = tmp_path / "wandb"
    done = replay_cli(root, into, wdir)
    assert done.returncode == EXIT_OK, done.stderr[-3000:]
    arts = artifacts_in(*run_files(wdir))
    assert keys(arts) == keys(artifacts_in(runs["once"]))
    assert_files_uploadable(arts, str(root / "rec"), wdir)
