"""Artifacts (issue 21): recorder.ModelCheckpoint, log_artifact, save and CheckpointHook into
the store's content-addressed blobs, and the store side (verify, merge, readers, the CLI).
Real Keras 3 / TensorFlow, real SQLite and files; TF1 graph mode and kills run in a child
process (tests/artifacts_script.py)."""

import glob
import hashlib
import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfblackbox import recorder
from tfblackbox.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tfblackbox.cli.main import main as cli
from tfblackbox.schema import ReadOnlyStoreError, Store, verify
from tfblackbox.schema.codecs import system_read
from tfblackbox.schema.store.artifacts import BLOB_DIR, blob_rel
from tfblackbox.schema.store.merge import merge

SCRIPT = os.path.join(os.path.dirname(__file__), "artifacts_script.py")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def blobs(store):
    return sorted(p for p in glob.glob(os.path.join(store.data.path(BLOB_DIR), "*", "*")))


def small_model(width=16):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width),
                              keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model


def data(n=32):
    rng = np.random.default_rng(0)
    return rng.random((n, 4)), rng.random((n, 1))


class ShaSpy(keras.callbacks.Callback):
    """The sha256 of the checkpoint file right after each save (runs after ModelCheckpoint)."""

    def __init__(self, path):
        super().__init__()
        self.path, self.seen = path, []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(sha(self.path) if os.path.exists(self.path) else None)


def run_script(*args, env=None):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env)
    return proc, (json.loads(proc.stdout.strip().splitlines()[-1])
                  if proc.returncode == 0 else None)


# -- ModelCheckpoint ---------------------------------------------------------------------------

def fit_with_checkpoints(store_dir, ckpt, epochs, **init):
    """A recorded run whose fit saves `ckpt` every epoch through recorder.ModelCheckpoint;
    returns the run and a ShaSpy of the bytes Keras wrote at each epoch."""
    run = recorder.init(store=store_dir, stats_interval=0, console="off", **init)
    spy = ShaSpy(ckpt)
    x, y = data()
    small_model().fit(x, y, epochs=epochs, verbose=0,
                      callbacks=[recorder.ModelCheckpoint(ckpt, monitor="loss"), spy])
    recorder.finish()
    return run, spy


def test_model_checkpoint_records_each_epoch_as_wandb_names_it(tmp_path):
    store_dir, ckpt = str(tmp_path / "store"), str(tmp_path / "ck" / "model.keras")
    run, spy = fit_with_checkpoints(store_dir, ckpt, 3)
    store = Store.open(store_dir)
    versions = store.artifacts(run.run_id)
    # WandbModelCheckpoint: run_<id>_model, type model, ["latest", f"epoch_{epoch}"] per epoch
    assert [(v.name, v.version, v.type, v.aliases) for v in versions] == [
        (f"run_{run.run_id}_model", e, "model", ("latest", f"epoch_{e}")) for e in range(3)]
    assert [[f.path for f in v.files] for v in versions] == [["model.keras"]] * 3
    # each version holds the bytes Keras wrote at that epoch, though Keras rewrote the path
    assert [v.files[0].sha256 for v in versions] == spy.seen and len(set(spy.seen)) == 3
    for v in versions:
        with store.open_artifact_file(v.files[0].sha256) as f:
            assert hashlib.sha256(f.read()).hexdigest() == v.files[0].sha256
    assert os.stat(ckpt).st_nlink == 1          # after fit the file no longer shares a blob
    assert keras.models.load_model(ckpt) is not None
    assert verify(Store.open(store_dir, access="write")).ok


def test_save_best_only_logs_the_best_file_again_as_wandb_does(tmp_path):
    """mode='max' on a falling loss: only epoch 0 improves; WandbModelCheckpoint logs the file
    at `filepath` every epoch anyway (W&B keeps one version): three versions, one blob."""
    store_dir, ckpt = str(tmp_path / "store"), str(tmp_path / "best.keras")
    run = recorder.init(store=store_dir, stats_interval=0, console="off")
    spy = ShaSpy(ckpt)
    x, y = data()
    small_model().fit(x, y, epochs=3, verbose=0, callbacks=[
        recorder.ModelCheckpoint(ckpt, monitor="loss", mode="max", save_best_only=True), spy])
    recorder.finish()
    store = Store.open(store_dir)
    versions = store.artifacts(run.run_id)
    assert [v.aliases for v in versions] == [("latest", f"epoch_{e}") for e in range(3)]
    assert len(set(spy.seen)) == 1 and {v.files[0].sha256 for v in versions} == set(spy.seen)
    assert len(blobs(store)) == 1


def test_batch_save_freq_weights_only_aliases(tmp_path):
    """save_freq=2 over 4 batches an epoch: WandbModelCheckpoint's on_train_batch_end gives
    ["latest", f"epoch_{epoch}_batch_{batch}"] for batches 1 and 3; no epoch versions."""
    store_dir, ckpt = str(tmp_path / "store"), str(tmp_path / "w.weights.h5")
    run = recorder.init(store=store_dir, stats_interval=0, console="off")
    x, y = data(32)
    small_model().fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[
        recorder.ModelCheckpoint(ckpt, monitor="loss", save_weights_only=True, save_freq=2)])
    recorder.finish()
    versions = Store.open(store_dir).artifacts(run.run_id)
    assert [v.aliases for v in versions] == [
        ("latest", f"epoch_{e}_batch_{b}") for e in range(2) for b in (1, 3)]
    assert all(v.files[0].path == "w.weights.h5" for v in versions)


def test_a_checkpoint_on_another_file_system_is_copied_before_keras_rewrites_it(
        tmp_path, small_fs):
    """No hard link across file systems: the artifact thread copies the file, and the next
    save to the same path waits for that copy; each version still holds its epoch's bytes."""
    other = small_fs("64m")
    store_dir, ckpt = str(tmp_path / "store"), str(other / "model.keras")
    run = recorder.init(store=store_dir, stats_interval=0, console="off")
    spy = ShaSpy(ckpt)
    x, y = data()
    small_model().fit(x, y, epochs=3, verbose=0,
                      callbacks=[recorder.ModelCheckpoint(ckpt, monitor="loss"), spy])
    recorder.finish()
    versions = Store.open(store_dir).artifacts(run.run_id)
    assert [v.files[0].sha256 for v in versions] == spy.seen


# -- log_artifact, save ------------------------------------------------------------------------

def test_log_artifact_of_a_saved_model_directory_and_get_writes_it_back(tmp_path, capsys):
    import tensorflow as tf
    store_dir = str(tmp_path / "store")
    saved = str(tmp_path / "exported")
    run = recorder.init(store=store_dir, stats_interval=0, console="off")
    model = small_model()
    model.export(saved)                                   # a SavedModel directory
    pending = recorder.log_artifact(saved, type="model", metadata={"acc": 0.5})
    version = pending.wait(60)
    recorder.finish()
    # wandb's defaults: name run-<id>-<base name>, aliases ["latest"]
    assert (version.name, version.type, version.aliases, version.metadata) == (
        f"run-{run.run_id}-exported", "model", ("latest",), {"acc": 0.5})
    written = {os.path.relpath(p, saved).replace(os.sep, "/"): sha(p)
               for p in glob.glob(os.path.join(saved, "**"), recursive=True) if os.path.isfile(p)}
    assert {f.path: f.sha256 for f in version.files} == written
    assert "saved_model.pb" in written and any(p.startswith("variables/") for p in written)
    out = str(tmp_path / "out")
    assert cli(["artifacts", "get", f"{version.name}:v0", "--store", store_dir,
                "--out", out]) == EXIT_OK
    got = {os.path.relpath(p, out).replace(os.sep, "/"): sha(p)
           for p in glob.glob(os.path.join(out, "**"), recursive=True) if os.path.isfile(p)}
    assert got == written
    loaded = tf.saved_model.load(out)
    assert loaded.serve(np.zeros((1, 4), np.float32)).shape == (1, 1)


def test_log_artifact_bad_input_never_raises(tmp_path, caplog):
    recorder.init(store=str(tmp_path / "store"), stats_interval=0, console="off")
    with caplog.at_level(logging.WARNING, logger="tfblackbox"):
        assert recorder.log_artifact(str(tmp_path / "nope")).wait(10) is None
        assert recorder.log_artifact(__file__, name="a/b") is None
    assert "neither a file nor a directory" in caplog.text and "contains '/'" in caplog.text


def test_save_records_run_files_as_wandb_names_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("outputs")
    for name in ("a.txt", "b.txt", "c.log"):
        with open(f"outputs/{name}", "w") as f:
            f.write(name)
    run = recorder.init(store="store", stats_interval=0, console="off")
    assert recorder.save("outputs/*.txt") == ["outputs/a.txt", "outputs/b.txt"]
    assert recorder.save(str(tmp_path / "outputs" / "c.log"), policy="now") == ["outputs/c.log"]
    with open("outputs/a.txt", "w") as f:           # live: changed before finish
        f.write("a, changed")
    recorder.finish()
    refs = [r for _a, r in system_read.files(Store.open("store"), run.run_id)
            if r["path"] != "requirements.txt"]
    hashes = {p: hashlib.sha256(p.split("/")[-1].encode()).hexdigest()
              for p in ("outputs/a.txt", "outputs/b.txt", "outputs/c.log")}
    assert [(r["path"], r["sha256"]) for r in refs] == [
        ("outputs/a.txt", hashes["outputs/a.txt"]), ("outputs/b.txt", hashes["outputs/b.txt"]),
        ("outputs/c.log", hashes["outputs/c.log"]),
        ("outputs/a.txt", hashlib.sha256(b"a, changed").hexdigest())]
    with pytest.raises(ValueError, match="policy"):
        recorder.save("outputs/*.txt", policy="sometimes")


# -- TF1 ---------------------------------------------------------------------------------------

def test_tf1_monitored_training_session_checkpoints_become_versions(tmp_path):
    store_dir, ckpt_dir = str(tmp_path / "store"), str(tmp_path / "ckpt")
    proc, out = run_script("tf1", store_dir, ckpt_dir, 22)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = Store.open(store_dir)
    versions = store.artifacts(out["run_id"])
    steps = [0, 5, 10, 15, 20, 22]      # MonitoredTrainingSession saves at 0, every 5, at end
    assert [v.aliases for v in versions] == [("latest", f"step_{s}") for s in steps]
    assert {v.name for v in versions} == {f"run_{out['run_id']}_model"}
    # the files TF still keeps (max_to_keep=5) are byte for byte the versions' files
    recorded = {f.path: f.sha256 for v in versions for f in v.files if f.path != "checkpoint"}
    assert out["files"] and all(recorded[name] == h for name, h in out["files"].items())
    # a version got back is a checkpoint TF restores
    get_dir = str(tmp_path / "got")
    assert cli(["artifacts", "get", f"run_{out['run_id']}_model:step_10", "--store",
                store_dir, "--out", get_dir]) == EXIT_OK
    import tensorflow as tf
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(get_dir))
    assert reader.get_tensor("global_step") == 10


# -- kills, full disks, limits -------------------------------------------------------------------

def test_kill_9_between_blobs_and_registration_leaves_no_version(tmp_path, capsys):
    store_dir, ckpt = str(tmp_path / "store"), str(tmp_path / "model.keras")
    env = dict(os.environ, TFBLACKBOX_TEST_KILL_AT="artifact-blobs-written")
    proc, _ = run_script("keras", store_dir, ckpt, 3, env=env)
    assert proc.returncode == -9, proc.stderr[-3000:]
    store = Store.open(store_dir)
    assert store.artifacts() == []                       # no half version
    assert len(blobs(store)) == 1                        # the blob written, unregistered
    assert cli(["verify", "--store", store_dir, "--grace", "0"]) == EXIT_OK
    assert "1 orphan(s) removed" in capsys.readouterr().out
    assert blobs(Store.open(store_dir)) == []


def test_disk_full_during_a_save_training_goes_on_nothing_half_registered(tmp_path, small_fs):
    fs = small_fs("3m")
    store_dir, ckpt = str(fs / "store"), str(tmp_path / "big.keras")   # another file system
    run = recorder.init(store=store_dir, stats_interval=0, console="off")
    spy = ShaSpy(ckpt)
    x, y = data()
    small_model(width=50_000).fit(x, y, epochs=3, verbose=0,    # ~ 1.2 MB a checkpoint
                                callbacks=[recorder.ModelCheckpoint(ckpt, monitor="loss"), spy])
    recorder.finish()
    assert len(spy.seen) == 3                                  # training went on
    store = Store.open(store_dir, access="write")
    versions = store.artifacts(run.run_id)
    assert len(versions) < 3
    assert [v.files[0].sha256 for v in versions] == spy.seen[:len(versions)]
    lost = {(x.table, x.reason): x.rows for x in store.losses(run.run_id)}
    assert lost.get(("artifacts", "failed")) == 3 - len(versions)
    assert not glob.glob(os.path.join(store.data.path(BLOB_DIR), ".*"))   # no temp left
    assert verify(store).ok


def test_max_artifact_bytes_skips_later_versions_with_one_warning(tmp_path, caplog):
    store_dir, ckpt = str(tmp_path / "store"), str(tmp_path / "model.keras")
    run = recorder.init(store=store_dir, stats_interval=0, console="off",
                        max_artifact_bytes=30_000)
    x, y = data()
    with caplog.at_level(logging.WARNING, logger="tfblackbox"):
        small_model().fit(x, y, epochs=3, verbose=0,
                          callbacks=[recorder.ModelCheckpoint(ckpt, monitor="loss")])
        recorder.finish()
    store = Store.open(store_dir)
    assert [v.aliases[1] for v in store.artifacts(run.run_id)] == ["epoch_0"]
    assert caplog.text.count("max_artifact_bytes") == 1
    lost = {(x.table, x.reason): x.rows for x in store.losses(run.run_id)}
    assert lost == {("artifacts", "max_bytes"): 2}


# -- dedup, merge, verify, readers, CLI ------------------------------------------------------

def test_ten_versions_with_a_frozen_half_store_the_frozen_part_once(tmp_path):
    """Small files (under chunks.CHUNK_MIN) are whole blobs, deduplicated by whole file: a
    model saved as files per part (here the frozen base's weights and the trained head's)
    stores the unchanged part once. Large files: tests/test_artifact_chunks.py."""
    store_dir = str(tmp_path / "store")
    run = recorder.init(store=store_dir, stats_interval=0, console="off")
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(256)])
    base.trainable = False
    head = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256),
                             keras.layers.Dense(1)])
    model = keras.Sequential([base, head])
    model.compile("sgd", "mse")
    folder = tmp_path / "parts"
    folder.mkdir()
    pending = []

    class LogParts(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            base.save_weights(str(folder / "base.weights.h5"))
            head.save_weights(str(folder / "head.weights.h5"))
            pending.append(recorder.log_artifact(str(folder), name="parts", type="model"))

    x, y = data()
    model.fit(x, y, epochs=10, verbose=0, callbacks=[LogParts()])
    recorder.finish()
    store = Store.open(store_dir)
    versions = store.artifacts(run.run_id, "parts")
    assert len(versions) == 10
    base_shas = {f.sha256 for v in versions for f in v.files if f.path == "base.weights.h5"}
    head_shas = {f.sha256 for v in versions for f in v.files if f.path == "head.weights.h5"}
    assert len(base_shas) == 1 and len(head_shas) == 10
    assert len(blobs(store)) == 11
    logical = sum(v.size for v in versions)
    stored = sum(os.path.getsize(p) for p in blobs(store))
    base_size = os.path.getsize(folder / "base.weights.h5")
    assert stored == logical - 9 * base_size


def test_merge_copies_versions_and_blobs_once_and_verify_finds_damage(tmp_path, capsys):
    src_dir, ckpt = str(tmp_path / "src"), str(tmp_path / "model.keras")
    run = recorder.init(store=src_dir, stats_interval=0, console="off")
    x, y = data()
    small_model().fit(x, y, epochs=2, verbose=0,
                      callbacks=[recorder.ModelCheckpoint(ckpt, monitor="loss")])
    recorder.finish()
    src = Store.open(src_dir)
    dst = Store.create(str(tmp_path / "dst"))
    report = merge([src], dst)[0]
    assert report["artifact_versions_copied"] == 2
    assert report["artifact_bytes_copied"] == sum(v.size for v in src.artifacts())
    assert merge([src], dst)[0]["artifact_versions_copied"] == 0          # idempotent
    strip = [(v.name, v.version, v.aliases, v.files, v.token) for v in src.artifacts()]
    assert [(v.name, v.version, v.aliases, v.files, v.token) for v in dst.artifacts()] == strip
    assert verify(dst).ok
    victim = src.artifacts()[0].files[0].sha256
    with open(dst.data.path(blob_rel(victim)), "r+b") as f:
        f.write(b"XX")
    assert cli(["verify", "--store", dst.root]) == EXIT_FAILED
    assert "sha256" in capsys.readouterr().err
    assert run.run_id in [r.run_id for r in dst.runs()]


def test_a_reader_writes_nothing(tmp_path):
    store_dir = str(tmp_path / "store")
    recorder.init(store=store_dir, stats_interval=0, console="off")
    recorder.finish()
    reader = Store.open(store_dir)
    with pytest.raises(ReadOnlyStoreError):
        reader.put_artifact_file(__file__)
    assert not os.path.exists(reader.data.path(BLOB_DIR))


def test_cli_lists_versions_and_refuses_bad_input(tmp_path, capsys):
    store_dir, ckpt = str(tmp_path / "store"), str(tmp_path / "model.keras")
    run = recorder.init(store=store_dir, stats_interval=0, console="off")
    x, y = data()
    small_model().fit(x, y, epochs=2, verbose=0,
                      callbacks=[recorder.ModelCheckpoint(ckpt, monitor="loss")])
    recorder.finish()
    name = f"run_{run.run_id}_model"
    capsys.readouterr()
    assert cli(["artifacts", "--store", store_dir]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{name}:v0" in out and "latest,epoch_1" in out
    assert cli(["artifacts", "--store", store_dir, "--run", run.run_id, "--json"]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    assert [v["ref"] for v in listed] == [f"{name}:v0", f"{name}:v1"]
    out_dir = str(tmp_path / "got")
    assert cli(["artifacts", "get", f"{name}:v1", "--store", store_dir, "--out",
                out_dir]) == EXIT_OK
    assert sha(os.path.join(out_dir, "model.keras")) == listed[1]["files"][0]["sha256"]
    capsys.readouterr()
    assert cli(["artifacts", "get", f"{name}:v7", "--store", store_dir, "--out",
                str(tmp_path / "x")]) == EXIT_USAGE
    assert f"no artifact version '{name}:v7'" in capsys.readouterr().err
    assert cli(["artifacts", "get", f"{name}:v0", "--store", store_dir, "--out",
                out_dir]) == EXIT_USAGE
    assert "not an empty directory" in capsys.readouterr().err
    assert cli(["artifacts", "--store", store_dir, "--run", "nope"]) == EXIT_USAGE


def test_artifacts_on_an_object_store(tmp_path, s3, s3_data, capsys):
    """data=s3://...: blobs are uploaded under their final names (no temp objects), read back
    through pyarrow, got back byte for byte, verified."""
    store_dir, ckpt = str(tmp_path / "store"), str(tmp_path / "model.keras")
    run, spy = fit_with_checkpoints(store_dir, ckpt, 2, data=s3_data)
    store = Store.open(store_dir)
    versions = store.artifacts(run.run_id)
    assert [v.files[0].sha256 for v in versions] == spy.seen
    assert store.local_artifact_path(spy.seen[0]) is None
    with store.open_artifact_file(spy.seen[1]) as f:
        assert hashlib.sha256(f.read()).hexdigest() == spy.seen[1]
    import pyarrow.fs as pafs
    base = s3_data.split("://", 1)[1].split("?", 1)[0]
    keys = [i.path[len(base) + 1:] for i in s3.filesystem().get_file_info(
        pafs.FileSelector(f"{base}/{BLOB_DIR}", recursive=True)) if i.type == pafs.FileType.File]
    assert sorted(keys) == sorted(blob_rel(h) for h in spy.seen)
    out = str(tmp_path / "got")
    assert cli(["artifacts", "get", f"run_{run.run_id}_model:v1", "--store", store_dir,
                "--out", out]) == EXIT_OK
    assert sha(os.path.join(out, "model.keras")) == spy.seen[1]
    assert verify(Store.open(store_dir, access="write")).ok
