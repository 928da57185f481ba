"""A recording that stays alive while a test replays it (tests/test_replay_live_artifacts.py).

    python live_artifact_script.py STORE DIR

Logs steps 0-4 and prints "recorded"; once DIR/go1 exists, logs an artifact version of
DIR/weights.bin (name "weights", type "model") and prints "logged" when it is registered;
once DIR/go2 exists, logs steps 5-9 and finishes. Each print is flushed: the test reads them
as they come.
"""

import os
import sys
import time

from tfblackbox import recorder


def wait_for(path, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"{path} did not appear within {timeout:.0f} s")
        time.sleep(0.05)


def main(store, folder):
    recorder.init(store=store, project="live", run_id="live", stats_interval=0, console="off")
    for s in range(5):
        recorder.log({"loss": 1.0 / (s + 1)}, step=s)
    recorder.flush()
    print("recorded", flush=True)
    wait_for(os.path.join(folder, "go1"))
    weights = os.path.join(folder, "weights.bin")
    with open(weights, "wb") as f:
        f.write(b"live weights\n" * 300)
    version = recorder.log_artifact(weights, name="weights", type="model").wait(60)
    if version is None:
        sys.exit("the artifact version was not registered")
    print("logged", flush=True)
    wait_for(os.path.join(folder, "go2"))
    for s in range(5, 10):
        recorder.log({"loss": 1.0 / (s + 1)}, step=s)
    recorder.finish()
    print("finished", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
