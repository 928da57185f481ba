"""A small Keras program with the TensorBoard callback, run under W&B or under tfblackbox.

    python keras_tb_script.py wandb OUT PAUSE     # wandb.init(offline, sync_tensorboard=True)
                                                   # + WandbMetricsLogger
    python keras_tb_script.py tfblackbox OUT PAUSE  # recorder.init(sync_tensorboard=True)
                                                   # + recorder.MetricsLogger, store OUT/store

The same seeded model and synthetic data either way: 4 epochs of 10 batches with a 20 %
validation split, both metric callbacks logging every 2 batches and each epoch, and the
TensorBoard callback writing its epoch values (train/ and validation/) and every 2nd batch's.
PAUSE seconds of sleep after each epoch make the run last long enough to be followed.
Prints "started" once the run is initialised.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

RUN_ID = "keras-tb"
CONFIG = {"lr": 0.01, "epochs": 4, "batch_size": 16}


def main(mode, out, pause):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")
    if mode == "wandb":
        import wandb
        from wandb.integration.keras import WandbMetricsLogger
        run = wandb.init(mode="offline", dir=out, project="parity", config=CONFIG,
                         sync_tensorboard=True,
                         settings=wandb.Settings(silent=True, console="off"))
        logger = WandbMetricsLogger(log_freq=2)
    else:
        from tfblackbox import recorder
        run = recorder.init(store=os.path.join(out, "store"), run_id=RUN_ID,
                            project="parity", config=CONFIG, sync_tensorboard=True,
                            console="off", flush_secs=0.5)
        logger = recorder.MetricsLogger(log_freq=2, histogram_freq=0)
    print("started", flush=True)

    class Pause(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(pause)

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")], name="small")
    model.compile(optimizer=keras.optimizers.Adam(CONFIG["lr"]), loss="binary_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=CONFIG["batch_size"], epochs=CONFIG["epochs"],
              validation_split=0.2, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(os.path.join(out, "logs"), update_freq=2),
                         logger, Pause()])
    run.finish()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
