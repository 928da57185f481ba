"""The demo: air-gapped training runs recorded into ./tfblackbox-store, then replayed (W&B
offline, a tfdbg dump dir), shown as a TensorBoard logdir and as an HTML report.

A 3-layer dense classifier on synthetic data (nothing is downloaded), trained with
tf.compat.v1.train.MonitoredTrainingSession and tfblackbox's hooks (TF1); then with Keras 3
`model.fit` and recorder.MetricsLogger plus recorder.log; a TF1 run in black-box mode
(DumpHook keep_last=5) whose loss turns NaN, written only around the NaN; and a TF2
tf.function loop writing tf.summary under `recorder.init(sync_tensorboard=True)` (Keras and
TF2 in child processes: the TF1 part turns eager execution off for its whole process).
"""

import argparse
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def dense(tf, x, width, name, relu=True):
    with tf.compat.v1.variable_scope(name):
        kernel = tf.compat.v1.get_variable(
            "kernel", [x.shape[1], width],
            initializer=tf.compat.v1.glorot_uniform_initializer(seed=len(name)))
        bias = tf.compat.v1.get_variable("bias", [width], initializer=tf.zeros_initializer())
    y = tf.matmul(x, kernel) + bias
    return tf.nn.relu(y) if relu else y


def build_model(tf):
    rng = tf.random.stateless_uniform
    x = rng([64, 20], seed=[1, 2])
    labels = tf.cast(tf.reduce_sum(x[:, :5], axis=1) > 2.5, tf.int64)
    h = x
    for i, width in enumerate([32, 16, 2]):
        h = dense(tf, h, width, f"dense{i}", relu=i < 2)
    logits = h
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                         logits=logits))
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32))
    step = tf.compat.v1.train.get_or_create_global_step()
    train_op = tf.compat.v1.train.AdamOptimizer(0.01).minimize(loss, global_step=step)
    tf.compat.v1.summary.scalar("loss", loss)
    tf.compat.v1.summary.scalar("accuracy", accuracy)
    for var in tf.compat.v1.trainable_variables():
        if "kernel" in var.name:
            tf.compat.v1.summary.histogram(var.op.name.replace("/", "_"), var)
    kernel = tf.compat.v1.trainable_variables()[0]
    picture = tf.cast(255 * tf.sigmoid(kernel), tf.uint8)[tf.newaxis, :, :, tf.newaxis]
    tf.compat.v1.summary.image("dense0_kernel", picture)
    tf.compat.v1.summary.text("status", tf.strings.format("loss {}", loss))
    return train_op


def tf2_summary_loop(store, logdir, steps=40):
    """A custom TF2 loop whose tf.summary output the recorder tails from `logdir`."""
    from tfblackbox import recorder
    run = recorder.init(store=store, project="tfblackbox-demo", name="tf-summary-loop",
                        config={"steps": steps}, tags=["air-gapped", "demo", "tf2"],
                        sync_tensorboard=True)   # before TF is imported: learned on import
    import tensorflow as tf
    w = tf.Variable(tf.random.stateless_normal([8, 8], seed=[1, 2]))

    @tf.function
    def step_fn(step):
        w.assign_sub(0.05 * w + 0.01 * tf.random.stateless_normal([8, 8], seed=[3, step]))
        loss = tf.reduce_mean(tf.square(w))
        tf.summary.scalar("loss", loss, step=step)
        tf.summary.histogram("w", w, step=step)
        tf.summary.image("w_image", tf.cast(tf.sigmoid(w) * 255, tf.uint8)[None, :, :, None],
                         step=step)
        tone = tf.sin(tf.linspace(0.0, 200.0 + 10.0 * tf.cast(step, tf.float32), 800))
        tf.summary.audio("tone", tone[None, :, None], 8000, step=step)
        tf.summary.text("status", tf.strings.format("step {}: loss {}", (step, loss)), step=step)

    with tf.summary.create_file_writer(logdir).as_default():
        for step in range(steps):
            step_fn(tf.constant(step, tf.int64))
    recorder.finish()   # flushes TF's writer, reads the files to their end
    print(run.run_id)


def keras_part(args):
    """The TF2 run: Keras fit with MetricsLogger (as WandbMetricsLogger), recorder.log and
    run.summary (as wandb.log and wandb.summary), its prints recorded as the console."""
    import keras
    import numpy as np
    from tfblackbox import recorder

    run = recorder.init(store=args.store, project="tfblackbox-demo", name="keras-synthetic",
                        config={"lr": 0.01, "epochs": 3, "layers": [32, 16, 2]},
                        tags=["air-gapped", "demo", "keras"])
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(1).uniform(size=(512, 20)).astype("float32")
    y = (x[:, :5].sum(axis=1) > 2.5).astype("int64")
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)],
                             name="dense_synthetic")
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x[:448], y[:448], validation_data=(x[448:], y[448:]), batch_size=32, epochs=3,
              verbose=2, callbacks=[recorder.MetricsLogger(log_freq="batch", histogram_freq=1)])
    loss, accuracy = model.evaluate(x[448:], y[448:], verbose=0)
    recorder.log({"eval/loss": loss, "eval/accuracy": accuracy})
    run.summary["eval_accuracy"] = accuracy
    print(f"evaluation: loss {loss:.4f}, accuracy {accuracy:.3f}")
    recorder.finish()
    print(f"recorded run {run.run_id} (Keras fit) into {args.store}")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--store", default="./tfblackbox-store")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--dump-every", type=int, default=100)
    p.add_argument("--wandb-dir", default="./wandb")
    p.add_argument("--dump-out", default="./tfblackbox-debug-dump")
    p.add_argument("--logdir", default="./tfblackbox-demo-logs",
                   help="where the TF2 part's tf.summary writer writes (tailed by the recorder)")
    p.add_argument("--tensorboard-out", default="./tfblackbox-tensorboard",
                   help="where replay --to tensorboard writes the runs as a TensorBoard logdir")
    p.add_argument("--report", default="./tfblackbox-report.html",
                   help="where `tfblackbox report` writes the HTML report")
    p.add_argument("--tf2-part", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--keras-part", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tf2_part:
        tf2_summary_loop(args.store, args.logdir)
        return 0
    if args.keras_part:
        return keras_part(args)

    import tensorflow as tf
    from tfblackbox import recorder
    from tfblackbox.cli.main import main as tfblackbox

    tf.compat.v1.disable_eager_execution()
    run = recorder.init(store=args.store, project="tfblackbox-demo", name="dense-synthetic",
                        config={"lr": 0.01, "steps": args.steps, "layers": [32, 16, 2]},
                        tags=["air-gapped", "demo"])
    train_op = build_model(tf)
    hooks = [recorder.SummaryHook(steps_per_log=args.log_every),
             recorder.DumpHook(every_n_steps=args.dump_every, max_bytes=256 << 20)]
    with tf.compat.v1.train.MonitoredTrainingSession(hooks=hooks) as sess:
        for _ in range(args.steps):
            sess.run(train_op)
    recorder.finish()
    print(f"\nrecorded run {run.run_id} into {args.store} (DumpHook captured tensors "
          f"{'in memory' if hooks[1].capture == 'memory' else 'through files'})\n")

    print("== a Keras fit with recorder.MetricsLogger (TF2)")
    keras_run = subprocess.run([sys.executable, __file__, "--keras-part", "--store", args.store],
                               capture_output=True, text=True)
    print(keras_run.stdout, end="")
    if keras_run.returncode != 0:
        print(keras_run.stderr[-3000:], file=sys.stderr)
        return keras_run.returncode
    keras_id = keras_run.stdout.rsplit("recorded run ", 1)[1].split()[0]
    print()
    tfblackbox(["runs", "--store", args.store])
    tfblackbox(["show", run.run_id, "--store", args.store])

    print(f"\n== replay --to wandb (offline) of both runs into {args.wandb_dir}")
    code = tfblackbox(["replay", "--store", args.store, "--to", "wandb", "--mode", "offline",
                       "--run", run.run_id, "--run", keras_id, "--wandb-dir", args.wandb_dir,
                       "--no-progress"])
    if code != 0:
        return code

    step = args.dump_every
    print(f"\n== replay --to debug-dump: step {step} into {args.dump_out}")
    code = tfblackbox(["replay", "--store", args.store, "--to", "debug-dump", "--run", run.run_id,
                       "--out", args.dump_out, "--steps", f"{step}:{step + 1}", "--force"])
    if code != 0:
        return code
    dirs = sorted(d for d in os.listdir(args.dump_out) if d.startswith("run_"))
    print(f"open step {step}'s dump in tfdbg's offline analyzer with:\n  {sys.executable} -m "
          f"tensorflow.python.debug.cli.offline_analyzer --dump_dir "
          f"{os.path.join(args.dump_out, dirs[0])}")
    code = blackbox_part(args, tfblackbox)
    return code or tf2_part(args, tfblackbox)


def blackbox_part(args, tfblackbox, bad_step=60):
    """Black-box mode: every step's tensors kept in memory (the last 5), written only when a
    NaN appears: here a `log` of an input that turns negative at `bad_step`."""
    import numpy as np
    import tensorflow as tf
    from tfblackbox import recorder
    print(f"\n== black-box mode: DumpHook(keep_last=5) on a run whose loss turns NaN at step "
          f"{bad_step}")
    run = recorder.init(store=args.store, project="tfblackbox-demo", name="nan-at-step-60",
                        tags=["air-gapped", "demo", "black-box"])
    with tf.Graph().as_default():
        step = tf.compat.v1.train.get_or_create_global_step()
        x = tf.compat.v1.placeholder(tf.float32, [16], name="x")
        w = tf.compat.v1.get_variable("w", [16], initializer=tf.compat.v1.ones_initializer())
        loss = tf.reduce_mean(tf.math.log(x * w, name="log") * w, name="mean_loss")
        tf.compat.v1.summary.scalar("loss", loss)
        train_op = tf.group(tf.compat.v1.assign_add(step, 1),
                            tf.compat.v1.assign_sub(w, 0.001 * w))
        hook = recorder.DumpHook(keep_last=5, persist_on=("nan", "exception"))
        with tf.compat.v1.train.MonitoredTrainingSession(
                hooks=[recorder.SummaryHook(steps_per_log=1), hook]) as sess:
            for s in range(bad_step + 20):
                value = -1.0 if s == bad_step else 2.0 + 0.01 * s
                sess.run([train_op, loss], {x: np.full(16, value, np.float32)})
    recorder.finish()
    for fired_at, kind, reason in hook.triggers:
        print(f"trigger {kind} at step {fired_at}: {reason}")
    tfblackbox(["show", run.run_id, "--store", args.store])
    out = args.dump_out + "-nan"
    code = tfblackbox(["replay", "--store", args.store, "--to", "debug-dump", "--run",
                       run.run_id, "--out", out, "--force"])
    if code != 0:
        return code
    last = sorted(d for d in os.listdir(out) if d.startswith("run_"))[-1]
    print(f"the NaN step's dump: find the first bad tensor with `lt -f has_inf_or_nan` in\n  "
          f"{sys.executable} -m tensorflow.python.debug.cli.offline_analyzer --dump_dir "
          f"{os.path.join(out, last)}")
    return 0


def tf2_part(args, tfblackbox):
    print(f"\n== TF2: a tf.function loop writing tf.summary to {args.logdir}, recorded with "
          f"sync_tensorboard=True")
    child = subprocess.run([sys.executable, os.path.abspath(__file__), "--tf2-part", "--store",
                            args.store, "--logdir", args.logdir], capture_output=True, text=True)
    if child.returncode != 0:
        print(child.stderr[-3000:], file=sys.stderr)
        return child.returncode
    run_id = child.stdout.split()[-1]
    tfblackbox(["show", run_id, "--store", args.store])
    print(f"\n== replay --to wandb (offline) of the tf.summary run into {args.wandb_dir}")
    code = tfblackbox(["replay", "--store", args.store, "--to", "wandb", "--mode", "offline",
                       "--run", run_id, "--wandb-dir", args.wandb_dir, "--no-progress"])
    return code or view_part(args, tfblackbox)


def view_part(args, tfblackbox):
    """Looking at the runs on the air-gapped machine itself: TensorBoard and the report."""
    print(f"\n== replay --to tensorboard: every run as a TensorBoard logdir in "
          f"{args.tensorboard_out}")
    code = tfblackbox(["replay", "--store", args.store, "--to", "tensorboard", "--out",
                       args.tensorboard_out])
    if code != 0:
        return code
    print(f"\n== tfblackbox report: one HTML page of every run into {args.report}")
    code = tfblackbox(["report", "--store", args.store, "--out", args.report])
    if code != 0:
        return code
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    print(f"\nopen the logdir with (no network needed):\n  {tensorboard} --logdir "
          f"{os.path.abspath(args.tensorboard_out)} --host 127.0.0.1\nopen the report with any "
          f"browser:\n  file://{os.path.abspath(args.report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
