"""recorder.MetricsLogger against wandb's WandbMetricsLogger, with real Keras 3 fits and real
wandb offline runs: both callbacks in the same fit (so the values are the same by
construction), the recorder's run replayed, and the .wandb transaction logs compared."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import wandb_log
from helpers import child_env
from tfblackbox.cli.main import main as cli, replay_main
from tfblackbox.cli.exits import EXIT_OK
from tfblackbox.schema import Store

FREQS = ("epoch", "batch", "3", "3x2")   # "3x2": two fits in one run, the same callbacks
VOLATILE = {"_runtime", "_timestamp", "_wandb"}

SIDE_BY_SIDE = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import keras
    import wandb
    from wandb.integration.keras import WandbMetricsLogger
    from tfblackbox import recorder

    out, store = sys.argv[1], sys.argv[2]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")], name="tiny")
    for freq in sys.argv[3:]:
        name, _, fits = freq.partition("x")
        log_freq = int(name) if name.isdigit() else name
        # a learning-rate schedule for "batch", a constant (a Keras variable) for the others
        schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=4,
                                                               decay_rate=0.9)
        optimizer = (keras.optimizers.SGD(schedule) if freq == "batch" else
                     keras.optimizers.Adam(0.01))
        model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["accuracy"])
        wrun = wandb.init(mode="offline", dir=os.path.join(out, f"wandb-{freq}"), project="k",
                          settings=wandb.Settings(silent=True, console="off"))
        recorder.init(store=store, run_id=f"keras-{freq}", project="k", console="off")
        callbacks = [WandbMetricsLogger(log_freq=log_freq),
                     recorder.MetricsLogger(log_freq=log_freq, histogram_freq=0)]
        for _ in range(int(fits or 1)):
            # 64 samples in batches of 8: 3 epochs of 8 batches, with validation
            model.fit(x, y, batch_size=8, epochs=3, validation_data=(x[:16], y[:16]),
                      verbose=0, callbacks=callbacks)
        model.evaluate(x, y, batch_size=8, verbose=0, callbacks=callbacks)
        model.predict(x, batch_size=8, verbose=0, callbacks=callbacks)
        wrun.finish()
        recorder.finish()
""")




def run_file(wandb_dir):
    [path] = sorted({os.path.realpath(f) for f in wandb_log.run_files(str(wandb_dir))})
    return path


def rows_of(path):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in wandb_log.history(path)]


def metrics_of(path):
    return [r.metric for r in wandb_log.read_records(path)
            if r.WhichOneof("record_type") == "metric"]


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    """One process, three fits (log_freq epoch, batch, 3), each with both callbacks."""
    root = tmp_path_factory.mktemp("keras")
    script = root / "fit.py"
    script.write_text(SIDE_BY_SIDE)
    store = str(root / "store")
    done = subprocess.run([sys.executable, str(script), str(root), store, *FREQS],
                          capture_output=True, text=True, timeout=300, env=child_env(),
                          cwd=str(root))
    assert done.returncode == 0, done.stderr[-3000:]
    return root, store


@pytest.mark.parametrize("freq,n_rows", [("epoch", 3), ("batch", 27), ("3", 12), ("3x2", 24)])
def test_metrics_logger_replays_as_wandb_metrics_logger(side_by_side, freq, n_rows, tmp_path):
    root, store = side_by_side
    want = run_file(root / f"wandb-{freq}")
    assert replay_main(["--store", store, "--to", "wandb", "--mode", "offline", "--run",
                        f"keras-{freq}", "--wandb-dir", str(tmp_path), "--no-progress"]) \
        == EXIT_OK
    got = run_file(tmp_path)
    want_rows, got_rows = rows_of(want), rows_of(got)
    assert len(want_rows) == n_rows
    assert got_rows == want_rows                      # key for key, value for value
    assert metrics_of(got) == metrics_of(want) and len(metrics_of(got)) == 2
    epochs = [r for r in got_rows if "epoch/epoch" in r]
    assert [r["epoch/epoch"] for r in epochs] == [0, 1, 2] * (2 if freq == "3x2" else 1)
    assert {"epoch/loss", "epoch/accuracy", "epoch/val_loss", "epoch/val_accuracy",
            "epoch/learning_rate"} <= set(epochs[0])
    if freq != "epoch":
        batches = [r["batch/batch_step"] for r in got_rows if "batch/batch_step" in r]
        step = 1 if freq == "batch" else 3   # and it goes on counting in a second fit
        assert batches == list(range(0, len(batches) * step, step))
        lrs = [r["batch/learning_rate"] for r in got_rows if "batch/learning_rate" in r]
        if freq == "batch":
            assert lrs[0] > lrs[-1]                   # the schedule's decay is logged
        else:
            assert set(lrs) == {0.009999999776482582}   # Adam(0.01), a float32 variable
    summary = {k: v for k, v in wandb_log.summary(got).items()
               if k not in VOLATILE and not k.startswith(("tfblackbox/", "model/"))}
    assert summary == {k: v for k, v in wandb_log.summary(want).items() if k not in VOLATILE}
    assert wandb_log.summary(got)["model/tiny/parameters"] == 4 * 8 + 8 + 8 + 1


def test_the_model_is_in_the_run_record(side_by_side):
    _root, store = side_by_side
    events = Store.open(store).read("keras-batch", "run_events").to_pylist()
    [model] = [json.loads(e["value_json"]) for e in events if e["kind"] == "model"]
    assert model["name"] == "tiny" and model["parameters"] == 49
    assert "Total params" in model["summary"] and json.loads(model["json"])["class_name"] \
        == "Sequential"


KILLED = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import keras
    from tfblackbox import recorder

    recorder.init(store=sys.argv[1], run_id="killed", flush_secs=3600, flush_rows=10**9)
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(80, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4),
                              keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")

    class Flush(keras.callbacks.Callback):
        seen = 0
        def on_train_batch_end(self, batch, logs=None):
            Flush.seen += 1
            if Flush.seen % 25 == 0:
                recorder.flush()
                print(f"flushed {Flush.seen}", flush=True)

    model.fit(x, y, batch_size=8, epochs=100000, verbose=0,
              callbacks=[recorder.MetricsLogger(log_freq="batch", histogram_freq=2), Flush()])
""")


@pytest.mark.long
def test_sigkill_mid_fit_keeps_every_flushed_row(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    store = str(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, str(script), store], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=child_env())
    flushed = []
    deadline = time.time() + 240
    try:
        while len(flushed) < 3 and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("flushed"):
                flushed.append(int(line.split()[1]))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    killed_at = time.time()
    assert len(flushed) == 3, "the training process did not reach three flushes"
    assert cli(["verify", "--store", store]) == 0
    s = Store.open(store)
    assert s.run("killed").status == "running"          # died without finishing
    sc = s.scalars("killed")
    batch_steps = sorted(v for t, v in zip(sc["tag"].to_pylist(), sc["value"].to_pylist())
                         if t == "batch/batch_step")
    # every batch up to the last flush is there (the callback logs each batch before Flush)
    assert batch_steps[:flushed[-1]] == list(range(flushed[-1]))
    epochs = [v for t, v in zip(sc["tag"].to_pylist(), sc["value"].to_pylist())
              if t == "epoch/epoch"]
    assert epochs[:3] == [0.0, 1.0, 2.0]               # 10 batches an epoch: 7+ epochs flushed
    hist = s.histograms("killed")
    assert "epoch/weights/sequential/dense/kernel" in set(hist["tag"].to_pylist())
    wdir = tmp_path / "wandb"
    time.sleep(max(0.0, 10.5 - (time.time() - killed_at)))   # the replay's settle time (2 x 5 s)
    assert replay_main(["--store", store, "--to", "wandb", "--mode", "offline",
                        "--wandb-dir", str(wdir), "--no-progress"]) == EXIT_OK
    rows = rows_of(run_file(wdir))
    assert [r["batch/batch_step"] for r in rows if "batch/batch_step" in r][:flushed[-1]] == \
        list(range(flushed[-1]))
