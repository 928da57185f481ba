"""A small Keras program that checkpoints, run under W&B or under tfblackbox.

    python keras_ckpt_script.py wandb OUT PAUSE       # wandb.init(offline) + WandbModelCheckpoint
                                                      # + wandb.log_artifact(SavedModel dir)
    python keras_ckpt_script.py tfblackbox OUT PAUSE  # recorder.init + recorder.ModelCheckpoint
                                                      # + recorder.log_artifact, store OUT/store

The same seeded model and data either way: 3 epochs with a validation split, the checkpoint
callback saving OUT/ckpt/model-{epoch:02d}.keras at each epoch's end (a version of
`run_<id>_model` each, aliases latest and epoch_N), then the model exported as a SavedModel
to OUT/saved and logged as an artifact of type model (a directory: several files in
subfolders; default name `run-<id>-saved`). PAUSE seconds of sleep after each epoch make the
run last long enough to be followed. Prints "started" once the run is initialised.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

RUN_ID = "Keras.Ckpt"   # not a W&B id as is: the replayed run's id differs (naming.py)


def main(mode, out, pause):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")
    ckpt = os.path.join(out, "ckpt", "model-{epoch:02d}.keras")
    os.makedirs(os.path.dirname(ckpt), exist_ok=True)
    if mode == "wandb":
        import wandb
        from wandb.integration.keras import WandbModelCheckpoint
        run = wandb.init(mode="offline", dir=out, project="ckpt",
                         settings=wandb.Settings(silent=True, console="off"))
        checkpoint = WandbModelCheckpoint(ckpt)
        log_artifact = wandb.log_artifact
    else:
        from tfblackbox import recorder
        run = recorder.init(store=os.path.join(out, "store"), run_id=RUN_ID, project="ckpt",
                            console="off", flush_secs=0.5)
        checkpoint = recorder.ModelCheckpoint(ckpt)
        log_artifact = recorder.log_artifact
    print("started", flush=True)

    class Pause(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            time.sleep(pause)

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")], name="tiny")
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, batch_size=16, epochs=3, validation_split=0.25, verbose=0,
              callbacks=[checkpoint, Pause()])
    saved = os.path.join(out, "saved")
    model.export(saved, verbose=False)
    log_artifact(saved, type="model")
    run.finish()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
