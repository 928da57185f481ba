"""The training process of the reliability cases: a small real TF1 MonitoredSession with
SummaryHook (and DumpHook), reporting each thing it did as one stdout line `NAME TIME ARGS`.

    python worker.py train STORE [--run-id ID] [--steps N] [--flush-every K] [--dump N] ...
    python worker.py train STORE --plain ...     # no TensorFlow: rows through run.submit
    python worker.py summary STORE KIND      # one kind of bad Summary fed through SummaryHook

Events: ready, init-start, init-done ATTEMPT RUN, train-start, step I, flush-start I,
flushed I, flush-error I TYPE, pause I (then it waits for a line on stdin), finish-start,
finish-done, finish-error TYPE, exit. With --go it waits for a line on stdin before init
(concurrent writers start together).
"""

import argparse
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# run as a script, this folder would be sys.path[0] and its modules would shadow others
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]


def emit(name, *args):
    print(name, f"{time.time():.6f}", *args, flush=True)


def build_graph(tf, prefix, image):
    """Scalars (one carries the step number, so the parent can check values), a histogram,
    optionally an image; a small dense layer trained by SGD."""
    step = tf.compat.v1.train.get_or_create_global_step()
    fed = tf.compat.v1.placeholder(tf.float32, [], name="feed")
    x = tf.random.normal([16, 32], seed=1)
    w = tf.compat.v1.get_variable("w", [32, 32])
    loss = tf.reduce_mean(tf.square(tf.matmul(x, w)))
    tf.compat.v1.summary.scalar(prefix + "fed", fed)
    tf.compat.v1.summary.scalar(prefix + "loss", loss)
    tf.compat.v1.summary.histogram(prefix + "weights", w)
    if image:
        img = tf.cast(tf.random.uniform([1, 8, 8, 3], seed=2) * 255, tf.uint8)
        tf.compat.v1.summary.image(prefix + "picture", img)
    train = tf.compat.v1.train.GradientDescentOptimizer(1e-3).minimize(loss, global_step=step)
    return fed, train


def wait_line():
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)   # the parent went away


def train(args):
    """Trains (TF1 MonitoredSession with SummaryHook, or with --plain a loop that records
    through run.submit without TensorFlow), flushing every --flush-every steps."""
    if not args.plain:
        import tensorflow as tf
        tf.compat.v1.disable_eager_execution()
    from tfblackbox import recorder
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="LOG %(levelname)s %(message)s")
    emit("ready")
    if args.go:
        wait_line()
    emit("init-start")
    run = recorder.init(store=args.store, run_id=args.run_id, resume=args.resume,
                        project="reliability", flush_secs=args.flush_secs)
    emit("init-done", run.attempt, run.run_id)
    if args.plain:
        tag = args.prefix + "fed"

        def step(i):
            run.submit(lambda b: b.add_scalar(i, time.time(), tag, float(i)))
        _loop(args, recorder, step)
    else:
        fed, train_op = build_graph(tf, args.prefix, args.image)
        hooks = [recorder.SummaryHook(steps_per_log=1)]
        if args.dump:
            hooks.append(recorder.DumpHook(every_n_steps=args.dump))
        with tf.compat.v1.train.MonitoredTrainingSession(hooks=hooks) as sess:
            _loop(args, recorder, lambda i: sess.run(train_op, feed_dict={fed: float(i)}))
    _finish(recorder)


def _loop(args, recorder, step):
    from tfblackbox.schema import WriterError
    pauses = {int(p) for p in args.pause_at.split(",") if p}
    emit("train-start")
    i = 0
    while args.steps == 0 or i < args.steps:
        step(i)
        emit("step", i)
        if args.flush_every and (i + 1) % args.flush_every == 0:
            emit("flush-start", i)
            try:
                recorder.flush()
                emit("flushed", i)
            except WriterError as e:   # the documented error: training goes on
                emit("flush-error", i, type(e).__name__)
                print(f"flush after step {i}: {e}", file=sys.stderr, flush=True)
        if i + 1 in pauses:
            emit("pause", i)
            wait_line()
        if args.step_sleep:
            time.sleep(args.step_sleep)
        i += 1


def _finish(recorder):
    from tfblackbox.schema import WriterError
    emit("finish-start")
    try:
        recorder.finish()
        emit("finish-done")
    except WriterError as e:   # finish() documents WriterError; anything else is a traceback
        emit("finish-error", type(e).__name__)
        print(f"finish: {e}", file=sys.stderr, flush=True)
    emit("exit")


# -- bad Summaries --------------------------------------------------------------------------------

def _value(tag, number):
    """A serialized Summary.Value {tag, simple_value}, built by hand so that any bytes fit."""
    import struct
    body = b"\x0a" + _varint(len(tag)) + tag + b"\x15" + struct.pack("<f", number)
    return b"\x0a" + _varint(len(body)) + body


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


BAD_SUMMARIES = {
    # a tag that is not UTF-8 between two good values
    "non-utf8-tag": lambda tf: tf.constant(
        _value(b"good/a", 1.5) + _value(b"bad/\xff\xfe", 2.5) + _value(b"good/b", 3.5)),
    "not-a-protobuf": lambda tf: tf.constant(b"\xff\xfe this is not a Summary protobuf"),
    "nan-inf": lambda tf: tf.compat.v1.summary.merge([
        tf.compat.v1.summary.scalar("nan", tf.constant(float("nan"))),
        tf.compat.v1.summary.scalar("pinf", tf.constant(float("inf"))),
        tf.compat.v1.summary.scalar("ninf", tf.constant(float("-inf")))]),
    "huge-tag": lambda tf: tf.constant(_value(b"h" * 200_000, 4.5) + _value(b"good/c", 5.5)),
    "0d-string-text": lambda tf: tf.compat.v1.summary.text("note", tf.constant("hello 0-d")),
}


def summary(args):
    import tensorflow as tf
    from tfblackbox import recorder
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="LOG %(levelname)s %(message)s")
    tf.compat.v1.disable_eager_execution()
    recorder.init(store=args.store, run_id="bad", flush_secs=0.5)
    step = tf.compat.v1.train.get_or_create_global_step()
    bad = BAD_SUMMARIES[args.kind](tf)
    good = tf.compat.v1.summary.scalar("good/steady", tf.constant(7.0))
    train_op = tf.compat.v1.assign_add(step, 1)
    hooks = [recorder.SummaryHook(summary_op=bad, steps_per_log=1),
             recorder.SummaryHook(summary_op=good, steps_per_log=1)]
    emit("train-start")
    with tf.compat.v1.train.MonitoredTrainingSession(hooks=hooks) as sess:
        for i in range(args.steps):
            sess.run(train_op)
            emit("step", i)
    _finish(recorder)


def main(argv=None):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train")
    t.add_argument("store")
    t.add_argument("--run-id", default="train")
    t.add_argument("--resume", default="allow")
    t.add_argument("--steps", type=int, default=0, help="0: until killed")
    t.add_argument("--flush-every", type=int, default=20)
    t.add_argument("--flush-secs", type=float, default=2.0)
    t.add_argument("--step-sleep", type=float, default=0.005)
    t.add_argument("--dump", type=int, default=0, help="DumpHook every N steps (0: none)")
    t.add_argument("--image", action="store_true")
    t.add_argument("--prefix", default="")
    t.add_argument("--pause-at", default="", help="steps after which to wait for stdin")
    t.add_argument("--go", action="store_true", help="wait for a stdin line before init")
    t.add_argument("--plain", action="store_true", help="no TensorFlow: rows via run.submit")
    s = sub.add_parser("summary")
    s.add_argument("store")
    s.add_argument("kind", choices=sorted(BAD_SUMMARIES))
    s.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    if args.mode == "train":
        train(args)
    else:
        summary(args)


if __name__ == "__main__":
    main()
