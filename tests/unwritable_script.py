"""A training process whose store turns unwritable under it:
`python unwritable_script.py STORE GO_FILE`. Trains and flushes, prints "ready", waits until
GO_FILE exists (the test has made the store read-only by then), trains and flushes on, then
prints the lines of /proc/self/maps that name the store and exits without calling finish()."""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

from tfblackbox import recorder  # noqa: E402


def main(store, go):
    tf.compat.v1.disable_eager_execution()
    recorder.init(store=store, run_id="ro", flush_secs=0.2)
    step = tf.compat.v1.train.get_or_create_global_step()
    tf.compat.v1.summary.scalar("x", tf.cast(step, tf.float32))
    train = tf.compat.v1.assign_add(step, 1)
    with tf.compat.v1.train.MonitoredTrainingSession(
            hooks=[recorder.SummaryHook(steps_per_log=1)]) as sess:
        for i in range(60):
            sess.run(train)
            if i == 20:
                recorder.flush()
                print("ready", flush=True)
                while not os.path.exists(go):
                    time.sleep(0.05)
            if i > 20 and i % 10 == 0:
                try:
                    recorder.flush()
                except Exception as e:   # the writer's error, as the training loop sees it
                    print("flush failed:", type(e).__name__, flush=True)
    root = os.path.realpath(store)
    with open("/proc/self/maps") as f:
        mapped = [line.strip() for line in f if root in line]
    print("mapped:", mapped, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
