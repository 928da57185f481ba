"""A TF2 training process for the sync_tensorboard tests (each test runs it as a child: the
test process itself runs TF1 graphs with eager execution off).

    python tf2_summary_script.py loop LOGDIR [--store S] [--steps N] [--forever] [--no-finish]
    python tf2_summary_script.py keras LOGDIR --store S
    python tf2_summary_script.py dropped LOGDIR --store S

`loop`: a tf.function step writing a scalar, a histogram, two images, an audio clip and a
text per step through `tf.summary.create_file_writer` (TF's defaults: max_queue=10,
flush_millis=120000, so data reaches the file late), a trace_export graph at step 0, then
a graph_def Event (tf.summary.graph), hparams, a pr-curve and a hand-made Summary through
write_raw_pb. With --store the recorder
is initialised with sync_tensorboard=True BEFORE tensorflow is imported (the import hook's
path). --forever writes until killed, printing "flushed <step>" after each writer flush.
`keras`: Keras fit with keras.callbacks.TensorBoard (histograms, images, batch-level
scalars, validation) under sync_tensorboard=True; the callback stays referenced until after
finish, as in a user's script (its writers are closed by then). `dropped`: a writer made and
dropped inside a function while a module-level tf.function that wrote through it lives on
(its captured handle outlives the writer). Without --store, the same programs without the
recorder. TF's C++ logging is silenced (TF_CPP_MIN_LOG_LEVEL=3, unless set) except with
--tf-default-logging, which leaves it at TF's default.
"""

import argparse
import gc
import os
import sys


def summaries(tf, steps, forever, writer_flush_every):
    from tensorboard.plugins.hparams import api as hp
    from tensorboard.plugins.pr_curve import summary as pr_summary

    w = tf.Variable(tf.random.stateless_normal([16, 8], seed=[1, 2]))

    @tf.function
    def step_fn(step):
        w.assign_add(tf.random.stateless_normal([16, 8], seed=[3, step]) * 0.1)
        tf.summary.scalar("loss", tf.reduce_mean(tf.square(w)), step=step)
        tf.summary.histogram("weights", w, step=step)
        pixels = tf.cast(tf.sigmoid(w) * 255, tf.uint8)
        tf.summary.image("kernel", tf.stack([pixels, 255 - pixels])[..., tf.newaxis], step=step,
                         max_outputs=2)
        wave = tf.sin(tf.linspace(0.0, 40.0 + tf.cast(step, tf.float32), 400))
        tf.summary.audio("tone", wave[tf.newaxis, :, tf.newaxis], 8000, step=step)
        tf.summary.text("status", tf.strings.format("step {} loss {}", (step, w[0, 0])),
                        step=step)

    writer = tf.summary.create_file_writer(LOGDIR)
    with writer.as_default():
        tf.summary.trace_on(graph=True, profiler=False)
        step_fn(tf.constant(0, tf.int64))
        tf.summary.trace_export("step_graph", step=0)
        tf.summary.graph(step_fn.get_concrete_function(tf.constant(0, tf.int64)).graph)
        step = 1
        while forever or step < steps:
            step_fn(tf.constant(step, tf.int64))
            if forever and step % writer_flush_every == 0:
                writer.flush()
                print(f"flushed {step}", flush=True)
            step += 1
        hp.hparams({"lr": 0.1, "optimizer": "sgd"})
        labels = [True, False, True, True]
        pr = pr_summary.raw_data_pb("pr", true_positive_counts=[3, 2, 1],
                                    false_positive_counts=[1, 1, 0],
                                    true_negative_counts=[0, 0, 1],
                                    false_negative_counts=[0, 1, 2],
                                    precision=[0.75, 0.66, 1.0], recall=[1.0, 0.66, 0.33],
                                    num_thresholds=3)
        tf.summary.experimental.write_raw_pb(pr.SerializeToString(), step=steps)
        raw = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(
            tag="raw/simple", simple_value=float(len(labels)))])
        tf.summary.experimental.write_raw_pb(raw.SerializeToString(), step=steps + 1)
    return writer   # not flushed or closed: the recorder's finish must flush it


def keras_fit(tf):
    import keras
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, :2].sum(axis=1) > 0).astype("int32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    tb = keras.callbacks.TensorBoard(LOGDIR, histogram_freq=1, write_images=True,
                                     update_freq="batch")
    model.fit(x, y, batch_size=16, epochs=EPOCHS, validation_data=(x[:16], y[:16]),
              callbacks=[tb], verbose=0)
    return tb


def dropped_writer(tf):
    @tf.function
    def step_fn(step):
        tf.summary.scalar("x", tf.cast(step, tf.float32), step=step)

    def train():
        writer = tf.summary.create_file_writer(LOGDIR)
        with writer.as_default():
            for step in range(3):
                step_fn(tf.constant(step, tf.int64))

    train()
    gc.collect()   # the writer is gone (TF deleted its resource); step_fn holds its handle
    return step_fn


def main(argv=None):
    global LOGDIR, EPOCHS
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["loop", "keras", "dropped"])
    p.add_argument("logdir")
    p.add_argument("--store")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--forever", action="store_true")
    p.add_argument("--no-finish", action="store_true")
    p.add_argument("--flush-secs", type=float, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--run-id", default="tf2")
    p.add_argument("--tf-default-logging", action="store_true")
    args = p.parse_args(argv)
    if args.tf_default_logging:
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    LOGDIR, EPOCHS = args.logdir, args.epochs
    recorder = None
    if args.store:
        from tfblackbox import recorder
        options = {} if args.flush_secs is None else {"flush_secs": args.flush_secs}
        run = recorder.init(store=args.store, run_id=args.run_id, sync_tensorboard=True,
                            resume="allow" if args.resume else None, **options)
        assert "tensorflow" not in sys.modules, "init must not import tensorflow"
        print(f"run {run.run_id}", flush=True)
    import tensorflow as tf
    # the loop's writer stays open (unflushed) until after finish: finish must flush it
    if args.mode == "loop":
        writer = summaries(tf, args.steps, args.forever, 5)
    else:
        writer = keras_fit(tf) if args.mode == "keras" else dropped_writer(tf)
    if recorder is not None and not args.no_finish:
        recorder.finish()
    print("done", flush=True)
    return writer


LOGDIR, EPOCHS = None, 2

if __name__ == "__main__":
    _writer = main()
