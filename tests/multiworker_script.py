"""One worker of a two-worker MultiWorkerMirroredStrategy job on 127.0.0.1 (TF2), recording
with the same `recorder.init` call in every task; tests/test_multiworker.py starts two.

    python multiworker_script.py PORT0,PORT1 INDEX STORE LOGDIR
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ports, index, store, logdir = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                      "task": {"type": "worker", "index": index}})

from tfblackbox import recorder  # noqa: E402

run = recorder.init(store=store, data=os.environ.get("MW_DATA"), project="mw", name="mwms",
                    config={"workers": len(ports)}, sync_tensorboard=True)

import tensorflow as tf  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()


@tf.function
def step():
    def replica():   # worker i adds i + 1: both see 3 only if they really reduced together
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce("sum", tf.cast(ctx.replica_id_in_sync_group + 1, tf.float32))
    return strategy.run(replica)


writer = tf.summary.create_file_writer(os.path.join(logdir, f"worker{index}"))
with writer.as_default():
    for s in range(5):
        total = strategy.experimental_local_results(step())[0]
        tf.summary.scalar("allreduced", total, step=s)
        tf.summary.scalar("worker_index", float(index), step=s)
recorder.finish()
print(run.run_id, run.record.group)
