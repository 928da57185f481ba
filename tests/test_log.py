"""recorder.log / run.summary / run.config / define_metric against wandb itself: the same calls
made on a wandb offline run and on the recorder (replayed with `replay --to wandb --mode
offline`) give the same .wandb history, summary, config and metric records. Also bad input,
and recorder.init/log/finish in a process where TensorFlow cannot be imported."""

import logging
import math
import os
import struct
import subprocess
import sys
import textwrap
import wave

import numpy as np

import wandb_log
from tfblackbox import recorder
from tfblackbox.cli.main import replay_main
from tfblackbox.cli.exits import EXIT_OK
from tfblackbox.schema import Store

# keys wandb and the replay set on their own: times, and the replay's own summary marks
VOLATILE = {"_runtime", "_timestamp", "_wandb"}
REPLAY_MARKS = {"tfblackbox/run_id", "tfblackbox/status"}


def replay(store, wandb_dir):
    return replay_main(["--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir",
                        str(wandb_dir), "--no-progress"])


def normalize(value):
    """NaN compares equal to NaN; the artifact ids of tables differ per run (they are names of
    two different W&B runs' artifacts), the rest of a table's entry must not."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()
                if k not in ("artifact_path", "_latest_artifact_path")}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def run_file(wandb_dir):
    """The one run-*.wandb under a dir (wandb's latest-run symlink names it twice)."""
    [path] = sorted({os.path.realpath(f) for f in wandb_log.run_files(str(wandb_dir))})
    return path


def rows_of(path):
    return [normalize({k: v for k, v in r.items() if k not in VOLATILE})
            for r in wandb_log.history(path)]


def summary_of(path):
    return normalize({k: v for k, v in wandb_log.summary(path).items()
                      if k not in VOLATILE | REPLAY_MARKS})


def metrics_of(path):
    return [r.metric for r in wandb_log.read_records(path)
            if r.WhichOneof("record_type") == "metric"]


def wav_file(path):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack("<64h", *range(64)))
    return str(path)


def calls(wandb, tmp_path):
    """The sequence of calls made on both sides: (method, args, kwargs)."""
    rng = np.random.default_rng(0)
    image = wandb.Image((rng.random((8, 6, 3)) * 255).astype(np.uint8), caption="noise")
    boxed = wandb.Image(
        (rng.random((8, 8)) * 255).astype(np.uint8), caption="boxed",
        boxes={"pred": {"box_data": [{"position": {"minX": 0.1, "maxX": 0.5, "minY": 0.2,
                                                   "maxY": 0.6}, "class_id": 1,
                                      "box_caption": "cat", "scores": {"p": 0.9}}],
                        "class_labels": {1: "cat"}}},
        masks={"truth": {"mask_data": (rng.random((8, 8)) > 0.5).astype(np.uint8),
                         "class_labels": {0: "bg", 1: "fg"}}})
    table = wandb.Table(columns=["name", "score", "picture"],
                        data=[["a", 1.5, image], ["b", None, image]])
    gif = tmp_path / "clip.gif"
    from PIL import Image as PILImage
    frames = [PILImage.new("L", (4, 4), c) for c in (0, 128, 255)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    return [
        ("define_metric", ("acc",), {"summary": "max"}),
        ("define_metric", ("val/*",), {"step_metric": "epoch"}),
        ("log", ({"a": 1, "f": 0.5, "b": True, "epoch": 0},), {}),
        ("log", ({"x": 1.25},), {"step": 5}),
        ("log", ({"y": 2},), {}),
        ("log", ({"d": 4},), {"commit": False}),
        ("log", ({"e": 5.5},), {}),
        ("log", ({"g": 7},), {"step": 10, "commit": True}),
        ("log", ({"h": 8, "val/loss": 0.25, "epoch": 1},), {}),
        ("summary", ({"best": 42, "note": "ok"},), {}),
        ("config", ({"b": 2, "nested": {"k": [1, 2]}},), {}),
        ("log", ({"acc": 0.5, "np32": np.float32(0.1), "np64": np.int64(3),
                  "npbool": np.bool_(False), "small": np.arange(10),
                  "big": rng.normal(size=100).astype(np.float32), "s": "text", "none": None,
                  "nested": {"k": [1, 2]}, "mixed": [1.5, "a"], "nan": float("nan"),
                  "inf": float("inf"), "one": np.array([2.5])},), {}),
        ("log", ({"acc": 0.9},), {}),
        ("summary", ({"acc": 0.1},), {}),     # overridden by the next logged acc, as in W&B
        ("log", ({"acc": 0.7},), {}),
        ("log", ({"image": image, "html": wandb.Html("<b>hi</b>"), "table": table,
                  "hist": wandb.Histogram(np_histogram=([1, 2, 3], [0.0, 1.0, 2.0, 3.0])),
                  "audio": wandb.Audio(wav_file(tmp_path / "clip.wav"), caption="clip"),
                  "images": [image, image], "boxed": boxed,
                  "video": wandb.Video(str(gif), caption="frames")},), {}),
        ("summary_del", ("note",), {}),
        ("log", ({"late": 1},), {"commit": False}),   # committed by finish
    ]


def apply(run, wandb_side, method, args, kwargs):
    if method == "log":
        run.log(*args, **kwargs)
    elif method == "define_metric":
        run.define_metric(*args, **kwargs)
    elif method == "summary":
        run.summary.update(*args)
    elif method == "summary_del":
        del run.summary[args[0]]
    elif method == "config":
        run.config.update(*args, **({"allow_val_change": True} if wandb_side else {}))


def test_log_calls_replay_as_wandb_logs_them(tmp_path, monkeypatch):
    import wandb
    monkeypatch.chdir(tmp_path)
    store = str(tmp_path / "store")
    direct = wandb.init(mode="offline", dir=str(tmp_path / "direct"), project="p",
                        config={"lr": 0.1}, settings=wandb.Settings(console="off", silent=True))
    run = recorder.init(store=store, project="p", config={"lr": 0.1}, console="off")
    for method, args, kwargs in calls(wandb, tmp_path):
        apply(direct, True, method, args, kwargs)
        apply(run, False, method, args, kwargs)
    direct.finish()
    recorder.finish()
    assert replay(store, tmp_path / "replayed") == EXIT_OK
    want, got = run_file(tmp_path / "direct"), run_file(tmp_path / "replayed")

    want_rows, got_rows = rows_of(want), rows_of(got)
    assert [r["_step"] for r in want_rows] == [0, 5, 6, 10, 11, 12, 13, 14, 15, 16]
    assert got_rows == want_rows
    assert isinstance(wandb_log.history(got)[0]["a"], int)       # 1, not 1.0
    assert wandb_log.history(got)[0]["b"] is True
    assert got_rows[5]["big"]["_type"] == "histogram" and len(got_rows[5]["big"]["values"]) == 32
    assert got_rows[8]["image"]["_type"] == "image-file" and got_rows[8]["table"]["_type"] \
        == "table-file"
    assert summary_of(got) == summary_of(want)
    assert summary_of(got)["best"] == 42 and "note" not in summary_of(got)
    assert wandb_log.config(got) == wandb_log.config(want) == {
        "lr": 0.1, "b": 2, "nested": {"k": [1, 2]}}
    assert metrics_of(got) == metrics_of(want) and len(metrics_of(got)) == 2
    # the media files themselves: same names and bytes
    for sub in ("media/images", "media/html", "media/videos", "media/audio",
                "media/images/mask", "media/table"):
        names = sorted(os.listdir(os.path.join(os.path.dirname(want), "files", sub)))
        assert names and names == sorted(os.listdir(os.path.join(os.path.dirname(got), "files",
                                                                 sub)))


def test_bad_input_is_named_and_the_rest_is_kept(store_dir, caplog):
    run = recorder.init(store=store_dir, console="off")
    with caplog.at_level(logging.WARNING, logger="tfblackbox"):
        run.log({"loss": 1.0, "obj": object(), "ragged": [np.ones(40), np.ones(3)],
                 3: 4.0, "acc": 0.5, "bad\udc80": 1.0})
        run.log({"loss": 0.5}, step=7)
        run.log({"loss": 0.25})
        run.log({"late": 9.0}, step=2)                  # backwards: named, still recorded
        run.log(["not", "a", "dict"])
        run.log({"loss": 0.125}, step=-3)               # not a step: logged at the current one
        run.summary["bad"] = object()
        recorder.define_metric("acc", summary="median")
        run.log({"obj": object()})                      # the same problem again: counted
    text = caplog.text
    assert "'obj' is not recorded: it is a value of type object" in text
    assert "'ragged' is not recorded" in text and "array of 40 values" in text
    assert "the key 3 (int) is not a string" in text
    assert "the key 'bad\\udc80' (str) is not a string (of valid text)" in text
    assert "log(step=2): the step went backwards (the current step is 8" in text
    assert "data must be a dict" in text and "got a list" in text
    assert "log(step=-3)" in text and "summary['bad'] is not recorded" in text
    assert "'median' is not one of" in text
    assert text.count("'obj' is not recorded") == 1
    recorder.finish()
    with caplog.at_level(logging.WARNING, logger="tfblackbox"):
        run.log({"after": 1.0})
    assert "log() after the run finished: not recorded" in caplog.text
    assert "8 logged item(s) were not recorded" in caplog.text
    scalars = Store.open(store_dir).scalars(run.run_id)
    got = list(zip(*(scalars[c].to_pylist() for c in ("step", "tag", "value"))))
    # log(step=7) leaves step 7 open: the next log() adds to it (loss 0.25 wins), as in wandb
    assert got == [(0, "loss", 1.0), (0, "acc", 0.5), (2, "late", 9.0), (7, "loss", 0.25),
                   (8, "loss", 0.125)]


def test_steps_and_types_survive_a_resume(store_dir, tmp_path):
    run = recorder.init(store=store_dir, run_id="r", console="off")
    for i in range(3):
        run.log({"n": i, "x": i / 2})
    recorder.finish()
    run = recorder.init(store=store_dir, run_id="r", resume="must", console="off")
    assert run.step == 3                       # after the last history step, as W&B resumes
    run.log({"n": 1.5, "x": 7})                # the kinds change in the second attempt
    recorder.finish()
    assert replay(store_dir, tmp_path / "w") == EXIT_OK
    f = run_file(tmp_path / "w")
    rows = [(r["_step"], r["n"], r["x"]) for r in wandb_log.history(f)]
    assert rows == [(0, 0, 0.0), (1, 1, 0.5), (2, 2, 1.0), (3, 1.5, 7)]
    assert [type(v) for v in rows[3][1:]] == [float, int]


NO_TF = textwrap.dedent("""
    import importlib.abc, sys
    class _NoTF(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras"):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, _NoTF())

    from tfblackbox import recorder
    run = recorder.init(store=sys.argv[1], run_id="plain", project="jax-like")
    for step in range(5):
        recorder.log({"loss": 1.0 / (step + 1), "step_s": f"s{step}"})
    print("printed by a plain loop")
    run.summary["final"] = 0.2
    try:
        recorder.MetricsLogger
    except ImportError as e:
        print("IMPORT ERROR:", e)
    recorder.finish()
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules
""")


def test_init_log_finish_work_without_tensorflow(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(NO_TF)
    store = str(tmp_path / "store")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    done = subprocess.run([sys.executable, str(script), store], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "IMPORT ERROR: tfblackbox.recorder.MetricsLogger needs TensorFlow" in done.stdout
    assert "pip install 'tfblackbox[tf]'" in done.stdout
    s = Store.open(store)
    assert s.scalars("plain")["value"].to_pylist() == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    lines = s.read("plain", "console")["text"].to_pylist()
    assert "printed by a plain loop\n" in lines


def test_log_calls_go_on_from_the_hooks_steps(graph, store_dir, tmp_path):
    """SummaryHook records at global steps (WandbHook logs with step=global_step); a log()
    without a step after it adds to that step's row, as wandb.log does after WandbHook's."""
    import tensorflow as tf
    step = tf.compat.v1.train.get_or_create_global_step()
    tf.compat.v1.summary.scalar("loss", tf.cast(step, tf.float32) / 10)
    train_op = tf.compat.v1.assign_add(step, 1)
    recorder.init(store=store_dir, console="off")
    with tf.compat.v1.train.MonitoredTrainingSession(
            hooks=[recorder.SummaryHook(steps_per_log=4)]) as sess:
        for i in range(10):
            sess.run(train_op)
            if i % 4 == 0:
                recorder.log({"eval": float(i)})
    recorder.finish()
    assert replay(store_dir, tmp_path / "w") == EXIT_OK
    rows = [(r["_step"], "loss" in r, r.get("eval"))
            for r in wandb_log.history(run_file(tmp_path / "w"))]
    assert rows == [(0, True, 0.0), (4, True, 4.0), (8, True, 8.0)]
