"""A TF2 training process for the tfdbg v2 tests (each test runs it as a child: the test
process itself runs TF1 graphs with eager execution off).

    python tfdbg_v2_script.py keras|loop|modes DUMP_ROOT [--store S] [--mode M] [--buffer N]
                              [--steps N] [--forever] [--flush-every K] [--max-bytes B]
                              [--no-finish] [--resume] [--finish-thread]

Without --store, TF's own `tf.debugging.experimental.enable_dump_debug_info(DUMP_ROOT, ...)`
records (the anchor). With --store, `recorder.enable_dump_debug_info(...)` records into run
"dbg" of the store (the recorder initialised before TensorFlow is imported); DUMP_ROOT is then
unused and the script prints the staging dir TF writes into ("staging <path>").
`keras`: Keras fit of a small dense net (deterministic: seeded, no shuffling, op determinism).
`loop`: a custom tf.function training step (GradientTape, SGD) that also takes the log of a
vector holding 0 and -1, so health modes see -Inf and NaN. --forever runs until killed,
calling recorder.flush() every --flush-every steps and printing "flushed <step>".
`modes`: recorder only: one session per tensor debug mode in one run, each with a fresh
tf.function and an eager op.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODES = ("NO_TENSOR", "CURT_HEALTH", "CONCISE_HEALTH", "FULL_HEALTH", "SHAPE", "FULL_TENSOR")


def keras_fit(tf, steps):
    import keras
    import numpy as np
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16 * steps, 8)).astype("float32")
    y = (x[:, :2].sum(axis=1) > 0).astype("int32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)


def make_loop(tf):
    w1 = tf.Variable(tf.random.stateless_normal([8, 16], seed=[1, 2]), name="w1")
    w2 = tf.Variable(tf.random.stateless_normal([16, 2], seed=[3, 4]), name="w2")
    odd = tf.constant([1.0, 0.0, -1.0])

    @tf.function
    def train_step(step):
        x = tf.random.stateless_normal([32, 8], seed=[5, step])
        y = tf.cast(tf.reduce_sum(x[:, :2], axis=1) > 0, tf.int32)
        with tf.GradientTape() as tape:
            logits = tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        g1, g2 = tape.gradient(loss, [w1, w2])
        w1.assign_sub(0.1 * g1)
        w2.assign_sub(0.1 * g2)
        return loss, tf.math.log(odd)   # -inf and nan: what the health modes are for

    return train_step


def modes(tf, recorder):
    from tfblackbox.schema import BlackboxError
    for mode in MODES:
        writer = recorder.enable_dump_debug_info(tensor_debug_mode=mode)
        if mode == MODES[0]:   # enabling again: the same settings are a no-op, others refused
            print("again", recorder.enable_dump_debug_info(tensor_debug_mode=mode) is writer)
            try:
                recorder.enable_dump_debug_info(tensor_debug_mode="FULL_TENSOR")
            except BlackboxError as e:
                print("refused", "disable_dump_debug_info() first" in str(e), flush=True)

        @tf.function
        def f(x):
            return tf.math.log(x) * 2.0

        f(tf.constant([1.0, 0.0, -1.0]))
        tf.sqrt(tf.constant([4.0, -1.0]))
        stats = recorder.disable_dump_debug_info()
        print(f"mode {mode} {stats['tfdbg_run_id']} {stats['records']}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("workload", choices=["keras", "loop", "modes"])
    p.add_argument("dump_root")
    p.add_argument("--store")
    p.add_argument("--mode", default="NO_TENSOR")
    p.add_argument("--buffer", type=int, default=1000)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--forever", action="store_true")
    p.add_argument("--flush-every", type=int, default=5)
    p.add_argument("--max-bytes", type=int, default=None)
    p.add_argument("--flush-secs", type=float, default=None)
    p.add_argument("--no-finish", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--finish-thread", action="store_true",
                   help="call recorder.finish() from another thread than the training's")
    args = p.parse_args(argv)
    recorder = None
    if args.store:
        from tfblackbox import recorder
        options = {} if args.flush_secs is None else {"flush_secs": args.flush_secs}
        run = recorder.init(store=args.store, run_id="dbg",
                            resume="allow" if args.resume else None, **options)
        assert "tensorflow" not in sys.modules, "init must not import tensorflow"
        print(f"run {run.run_id}", flush=True)
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    if args.workload == "modes":
        modes(tf, recorder)
        recorder.finish()
        print("done", flush=True)
        return
    if recorder is not None:
        recorder.enable_dump_debug_info(tensor_debug_mode=args.mode,
                                        circular_buffer_size=args.buffer,
                                        max_bytes=args.max_bytes)
        from tfblackbox.recorder.tf2 import tfdbg_v2
        print(f"staging {tfdbg_v2.session_of(recorder.active_run()).dump_root}", flush=True)
    else:
        tf.debugging.experimental.enable_dump_debug_info(
            args.dump_root, tensor_debug_mode=args.mode, circular_buffer_size=args.buffer)
    if args.workload == "keras":
        keras_fit(tf, args.steps)
    else:
        step_fn, step = make_loop(tf), 0
        while args.forever or step < args.steps:
            step_fn(tf.constant(step, tf.int64))
            step += 1
            if args.forever and step % args.flush_every == 0:
                recorder.flush()
                print(f"flushed {step}", flush=True)
    if recorder is not None and args.finish_thread:
        import threading
        t = threading.Thread(target=recorder.finish, name="finisher")
        t.start()
        t.join()
    elif recorder is not None and not args.no_finish:
        recorder.finish()
    print("done", flush=True)


if __name__ == "__main__":
    main()
