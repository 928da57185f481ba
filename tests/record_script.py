"""A training process for the crash and exit tests: `python record_script.py STORE MODE [N]`.

MODE: "kill" trains forever, printing "flushed <step>" after each flush, until killed;
"exit" records N steps and leaves without finish(); "raise" records then raises.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

from tfblackbox import recorder  # noqa: E402


def main(store, mode, n=50):
    tf.compat.v1.disable_eager_execution()
    recorder.init(store=store, run_id="crash", resume="allow", flush_secs=3600, flush_rows=10**9)
    step = tf.compat.v1.train.get_or_create_global_step()
    fed = tf.compat.v1.placeholder(tf.float32, [])
    tf.compat.v1.summary.scalar("x", fed)
    tf.compat.v1.summary.histogram("h", tf.random.normal([50]))
    train_op = tf.compat.v1.assign_add(step, 1)
    with tf.compat.v1.train.MonitoredTrainingSession(
            hooks=[recorder.SummaryHook(steps_per_log=1)]) as sess:
        i = 0
        while mode == "kill" or i < n:
            sess.run(train_op, feed_dict={fed: float(i)})
            if mode == "kill" and i % 20 == 0:
                recorder.flush()
                print(f"flushed {i}", flush=True)
            i += 1
    if mode == "raise":
        raise RuntimeError("training blew up")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
