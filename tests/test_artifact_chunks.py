"""Large artifact files stored as chunks (schema/store/chunks.py): a model with a frozen half
saved ten times by recorder.ModelCheckpoint as one .keras file stores the frozen half once;
the files come back byte for byte (artifacts get, open_artifact_file); kills, verify, merge
and object storage hold for chunks. Real Keras 3, SQLite, files and a local S3 server."""

import glob
import hashlib
import os
import subprocess
import sys

import keras
import numpy as np

from tfblackbox import recorder
from tfblackbox.cli.exits import EXIT_FAILED, EXIT_OK
from tfblackbox.cli.main import main as cli
from tfblackbox.schema import Store, verify
from tfblackbox.schema.store import chunks as chunking
from tfblackbox.schema.store.artifacts import BLOB_DIR, blob_rel
from tfblackbox.schema.store.merge import merge

SCRIPT = os.path.join(os.path.dirname(__file__), "artifacts_script.py")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def blobs(store):
    return sorted(glob.glob(os.path.join(store.data.path(BLOB_DIR), "*", "*")))


class ShaSpy(keras.callbacks.Callback):
    """The sha256 of the checkpoint file right after each save (runs after ModelCheckpoint)."""

    def __init__(self, path):
        super().__init__()
        self.path, self.seen = path, []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(sha(self.path))

WIDTH = 512   # frozen Dense(512x512) + trained Dense(512x512): ~2 MB a .keras file


def frozen_half_model():
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((WIDTH,)), keras.layers.Dense(WIDTH)])
    base.trainable = False
    model = keras.Sequential([base, keras.layers.Dense(WIDTH), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(1e-4), "mse")   # small steps: no NaN weights
    rng = np.random.default_rng(0)
    return model, rng.random((64, WIDTH)), rng.random((64, 1))


def ten_saves(tmp_path, name="model.keras", **init):
    store_dir, ckpt = str(tmp_path / "store"), str(tmp_path / name)
    run = recorder.init(store=store_dir, stats_interval=0, console="off", **init)
    model, x, y = frozen_half_model()
    spy = ShaSpy(ckpt)
    history = model.fit(x, y, epochs=10, verbose=0, callbacks=[
        recorder.ModelCheckpoint(ckpt, monitor="loss",
                                 save_weights_only=name.endswith(".weights.h5")), spy])
    recorder.finish()
    assert np.isfinite(history.history["loss"]).all()   # the trained half really changes
    return store_dir, run, spy, os.path.getsize(ckpt)


def test_ten_keras_saves_with_a_frozen_half_store_it_once_and_come_back_byte_for_byte(
        tmp_path, capsys):
    store_dir, run, spy, size = ten_saves(tmp_path)
    assert size >= chunking.CHUNK_MIN
    store = Store.open(store_dir)
    versions = store.artifacts(run.run_id)
    assert [v.files[0].sha256 for v in versions] == spy.seen and len(set(spy.seen)) == 10
    stored = sum(os.path.getsize(p) for p in blobs(store))
    assert stored < 0.7 * 10 * size          # whole-file dedup would store 10x the file
    for v in (versions[0], versions[9]):
        f = v.files[0]
        assert store.local_artifact_path(f.sha256) is None     # chunked: read through a stream
        with store.open_artifact_file(f.sha256) as got:
            assert hashlib.sha256(got.read()).hexdigest() == f.sha256
        out = str(tmp_path / f"got{v.version}")
        assert cli(["artifacts", "get", f"run_{run.run_id}_model:v{v.version}",
                    "--store", store_dir, "--out", out]) == EXIT_OK
        assert sha(os.path.join(out, "model.keras")) == f.sha256
    assert verify(Store.open(store_dir, access="write")).ok
    victim = chunking.chunk_lists(store.catalog, [versions[3].files[0].sha256])
    chunk = next(iter(victim.values()))[-1][0]
    with open(store.data.path(blob_rel(chunk)), "r+b") as f:
        f.write(b"XX")
    assert cli(["verify", "--store", store_dir]) == EXIT_FAILED
    assert "sha256" in capsys.readouterr().err


def test_weights_h5_saves_with_a_frozen_half_store_it_once(tmp_path):
    store_dir, run, spy, size = ten_saves(tmp_path, "model.weights.h5")
    store = Store.open(store_dir)
    assert [v.files[0].sha256 for v in store.artifacts(run.run_id)] == spy.seen
    assert sum(os.path.getsize(p) for p in blobs(store)) < 0.7 * 10 * size


def test_kill_9_between_chunk_writes_and_registration_leaves_no_version(tmp_path, capsys):
    store_dir, ckpt = str(tmp_path / "store"), str(tmp_path / "model.keras")
    env = dict(os.environ, TFBLACKBOX_TEST_KILL_AT="artifact-blobs-written")
    proc = subprocess.run([sys.executable, SCRIPT, "keras", store_dir, ckpt, "3", "60000"],
                          capture_output=True, text=True, timeout=600, env=env)   # ~ 1.4 MB
    assert proc.returncode == -9, proc.stderr[-3000:]
    store = Store.open(store_dir)
    # (the checkpoint file itself may be half rewritten by the next epoch's save at the kill)
    assert store.artifacts() == []                            # no half version
    assert len(blobs(store)) >= 4                  # a ~1.4 MB file's chunks, unregistered
    assert cli(["verify", "--store", store_dir, "--grace", "0"]) == EXIT_OK
    assert "orphan(s) removed" in capsys.readouterr().out
    assert blobs(Store.open(store_dir)) == []


def test_merge_copies_only_the_missing_chunks(tmp_path):
    store_dir, run, spy, size = ten_saves(tmp_path)
    src = Store.open(store_dir)
    dst = Store.create(str(tmp_path / "dst"))
    report = merge([src], dst)[0]
    assert report["artifact_versions_copied"] == 10
    src_bytes = sum(os.path.getsize(p) for p in blobs(src))
    assert report["artifact_bytes_copied"] == src_bytes < 0.7 * 10 * size
    assert sorted(os.path.basename(p) for p in blobs(dst)) == \
        sorted(os.path.basename(p) for p in blobs(src))
    for v in dst.artifacts(run.run_id):
        with dst.open_artifact_file(v.files[0].sha256) as f:
            assert hashlib.sha256(f.read()).hexdigest() == v.files[0].sha256
    assert verify(dst).ok
    assert merge([src], dst)[0]["artifact_bytes_copied"] == 0


def test_chunked_checkpoints_on_an_object_store(tmp_path, s3, s3_data):
    store_dir, run, spy, size = ten_saves(tmp_path, data=s3_data)
    store = Store.open(store_dir)
    versions = store.artifacts(run.run_id)
    assert [v.files[0].sha256 for v in versions] == spy.seen
    import pyarrow.fs as pafs
    base = s3_data.split("://", 1)[1].split("?", 1)[0]
    infos = [i for i in s3.filesystem().get_file_info(pafs.FileSelector(
        f"{base}/{BLOB_DIR}", recursive=True)) if i.type == pafs.FileType.File]
    assert not any(os.path.basename(i.path).startswith(".") for i in infos)   # no temp object
    assert sum(i.size for i in infos) < 0.7 * 10 * size
    with store.open_artifact_file(spy.seen[7]) as f:
        assert hashlib.sha256(f.read()).hexdigest() == spy.seen[7]
    out = str(tmp_path / "got")
    assert cli(["artifacts", "get", f"run_{run.run_id}_model:v9", "--store", store_dir,
                "--out", out]) == EXIT_OK
    assert sha(os.path.join(out, "model.keras")) == spy.seen[9]
    assert verify(Store.open(store_dir, access="write")).ok


def test_replay_to_wandb_stages_chunked_files_reassembled(tmp_path):
    """replay --to wandb offline: each chunked checkpoint is staged whole (read through the
    chunks), its manifest digest the md5 wandb gives the file the training wrote."""
    import base64
    import wandb_log
    store_dir, run, spy, size = ten_saves(tmp_path)
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_SILENT="true", PYTHONPATH=tests,
               WANDB_DATA_DIR=str(tmp_path / "wandb-data"))
    proc = subprocess.run([sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store",
                           store_dir, "--to", "wandb", "--mode", "offline", "--wandb-dir",
                           str(tmp_path / "wb"), "--no-progress", "--json"],
                          capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(tmp_path))
    assert proc.returncode == EXIT_OK, proc.stderr[-3000:]
    logs = sorted({os.path.realpath(f) for f in wandb_log.run_files(str(tmp_path / "wb"))})
    arts = [r.artifact for p in logs for r in wandb_log.read_records(p)
            if r.WhichOneof("record_type") == "artifact"]
    assert len(arts) == 10
    store = Store.open(store_dir)
    for art, v in zip(arts, store.artifacts(run.run_id)):
        [entry] = art.manifest.contents
        assert sha(entry.local_path) == v.files[0].sha256        # byte for byte
        with store.open_artifact_file(v.files[0].sha256) as f:
            want = base64.b64encode(hashlib.md5(f.read()).digest()).decode()
        assert entry.digest == want
