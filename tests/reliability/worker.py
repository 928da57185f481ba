"""The training process of the reliability cases: a small real TF1 MonitoredSession with
SummaryHook (and DumpHook), reporting each thing it did as one stdout line `NAME TIME ARGS`.

    python worker.py train STORE [--run-id ID] [--steps N] [--flush-every K] [--dump N] ...
    python worker.py train STORE --plain ...     # no TensorFlow: rows through run.submit
    python worker.py summary STORE KIND      # one kind of bad Summary fed through SummaryHook

Events: ready, init-start, init-done ATTEMPT RUN, train-start, step I, flush-start I,
flushed I, flush-error I TYPE, pause I (then it waits for a line on stdin), finish-start,
finish-done, finish-error TYPE, held WRITER ARROW BOUND (with --sample-held), exit. With --go
it waits for a line on stdin before init (concurrent writers start together).
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


def build_graph(tf, prefix, image, scalars=2, width=32, noise=0):
    """`scalars` scalar tags (`fed`, `loss`, then `s02`... = fed + k: the step number, so the
    parent can check values), a histogram, optionally an image; a dense layer of `width`
    units trained by SGD; `noise` random floats a step in the loss (dumps that do not
    compress)."""
    step = tf.compat.v1.train.get_or_create_global_step()
    fed = tf.compat.v1.placeholder(tf.float32, [], name="feed")
    x = tf.random.normal([16, width], seed=1)
    w = tf.compat.v1.get_variable("w", [width, width])
    loss = tf.reduce_mean(tf.square(tf.matmul(x, w)))
    if noise:
        loss += 0.0 * tf.reduce_mean(tf.random.uniform([noise], seed=3))
    tf.compat.v1.summary.scalar(prefix + "fed", fed)
    tf.compat.v1.summary.scalar(prefix + "loss", loss)
    for k in range(2, scalars):
        tf.compat.v1.summary.scalar(f"{prefix}s{k:02d}", fed + k)
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
    options = ({} if args.max_unwritten_bytes is None else
               {"max_unwritten_bytes": args.max_unwritten_bytes})
    run = recorder.init(store=args.store, run_id=args.run_id, resume=args.resume,
                        project="reliability", flush_secs=args.flush_secs, **options)
    emit("init-done", run.attempt, run.run_id)
    sampler = HeldSampler(run.writer) if args.sample_held else None
    if args.plain:
        tag = args.prefix + "fed"

        def step(i):
            run.submit(lambda b: b.add_scalar(i, time.time(), tag, float(i)))
        _loop(args, recorder, step)
    else:
        fed, train_op = build_graph(tf, args.prefix, args.image, args.scalars, args.width,
                                     args.noise)
        hooks = [recorder.SummaryHook(steps_per_log=1)]
        if args.dump:
            hooks.append(recorder.DumpHook(every_n_steps=args.dump))
        with tf.compat.v1.train.MonitoredTrainingSession(hooks=hooks) as sess:
            _loop(args, recorder, lambda i: sess.run(train_op, feed_dict={fed: float(i)}))
    _finish(recorder, sampler)


def _loop(args, recorder, step):
    from tfblackbox.schema import WriterError
    pauses = {int(p) for p in args.pause_at.split(",") if p}
    emit("train-start")
    i, timed_pause, end = 0, None, args.steps
    while end == 0 or i < end:
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
        if i + 1 in pauses or (timed_pause is not None and time.monotonic() >= timed_pause):
            emit("pause", i)
            wait_line()
            # --pause-after-secs: after the first pause, once more when that much time of
            # training has passed; --steps-after-pause: then that many steps and the end
            if args.pause_after_secs and timed_pause is None:
                timed_pause = time.monotonic() + args.pause_after_secs
            elif timed_pause is not None:
                timed_pause, end = None, i + 1 + args.steps_after_pause
        if args.step_sleep:
            time.sleep(args.step_sleep)
        i += 1


def _finish(recorder, sampler=None):
    from tfblackbox.schema import WriterError
    emit("finish-start")
    try:
        recorder.finish()
        emit("finish-done")
    except WriterError as e:   # finish() raised WriterError before issue 23
        emit("finish-error", type(e).__name__)
        print(f"finish: {e}", file=sys.stderr, flush=True)
    if sampler is not None:
        emit("held", *sampler.stop())
    emit("exit")


class HeldSampler:
    """Samples, every 10 ms until stop(), the bytes the writer holds for rows not in the
    store (its own count, Writer.held_bytes) and the bytes Arrow has allocated in the process
    (its default and system pools: the writer's tables, encoders and segments; TensorFlow
    does not use Arrow). stop() -> (writer peak, Arrow peak, the bound)."""

    def __init__(self, writer):
        import threading
        self.writer, self.peaks = writer, [0, 0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import pyarrow as pa
        while not self._stop.wait(0.01):
            held = self.writer.held_bytes() if hasattr(self.writer, "held_bytes") else 0
            arrow = pa.total_allocated_bytes() + pa.system_memory_pool().bytes_allocated()
            self.peaks = [max(self.peaks[0], held), max(self.peaks[1], arrow)]

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return self.peaks + [getattr(self.writer, "max_unwritten_bytes", 0)]


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
    t.add_argument("--scalars", type=int, default=2, help="scalar tags (fed, loss, s02...)")
    t.add_argument("--width", type=int, default=32, help="units of the dense layer")
    t.add_argument("--noise", type=int, default=0, help="random floats a step in the loss")
    t.add_argument("--pause-after-secs", type=float, default=0,
                   help="after the first pause, pause again once this long has passed")
    t.add_argument("--steps-after-pause", type=int, default=0,
                   help="with --pause-after-secs: steps after that pause, then the end")
    t.add_argument("--max-unwritten-bytes", type=int, default=None)
    t.add_argument("--sample-held", action="store_true",
                   help="report the peak bytes the writer held (event: held)")
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
