"""Recording programs tests/test_artifacts.py runs in a child process (TF1 graph mode, kills).

    python artifacts_script.py keras STORE CKPT_PATH EPOCHS   Keras fit with ModelCheckpoint
    (optional 5th argument WIDTH: the hidden layer's width)
    python artifacts_script.py tf1 STORE CKPT_DIR STEPS       MonitoredTrainingSession +
                                                              CheckpointHook, a save every 5
Prints one JSON line: what the training wrote (sha256 of each checkpoint file at save time).
"""

import hashlib
import json
import os
import sys

from tfblackbox import recorder


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def keras_fit(store, ckpt, epochs, width=16):
    import keras
    import numpy as np
    run = recorder.init(store=store, stats_interval=0, console="off")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(sha(ckpt))

    rng = np.random.default_rng(0)
    model.fit(rng.random((32, 4)), rng.random((32, 1)), epochs=epochs, verbose=0,
              callbacks=[recorder.ModelCheckpoint(ckpt, monitor="loss"), Spy()])
    recorder.finish()
    print(json.dumps({"run_id": run.run_id, "epochs_done": len(seen), "sha256": seen}))


def tf1(store, ckpt_dir, steps):
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    run = recorder.init(store=store, stats_interval=0, console="off")
    step = tf.compat.v1.train.get_or_create_global_step()
    w = tf.compat.v1.get_variable("w", [8, 8], initializer=tf.compat.v1.ones_initializer())
    loss = tf.reduce_sum(w * w)
    train = tf.compat.v1.train.GradientDescentOptimizer(0.01).minimize(loss, global_step=step)
    hook = recorder.CheckpointHook(ckpt_dir, poll_secs=0.0)
    with tf.compat.v1.train.MonitoredTrainingSession(
            checkpoint_dir=ckpt_dir, save_checkpoint_steps=5, save_summaries_steps=None,
            save_summaries_secs=None, log_step_count_steps=None, hooks=[hook]) as sess:
        for _ in range(steps):
            sess.run(train)
    recorder.finish()
    state = tf.train.get_checkpoint_state(ckpt_dir)
    files = {}
    for prefix in state.all_model_checkpoint_paths:
        for name in os.listdir(ckpt_dir):
            full = os.path.join(ckpt_dir, name)
            if full.startswith(prefix + "."):
                files[name] = sha(full)
    print(json.dumps({"run_id": run.run_id, "checkpoints": list(state.all_model_checkpoint_paths),
                      "files": files}))


if __name__ == "__main__":
    mode, store, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    more = [int(a) for a in sys.argv[5:]]   # keras: the hidden width (big: chunked files)
    {"keras": keras_fit, "tf1": tf1}[mode](store, path, n, *more)
