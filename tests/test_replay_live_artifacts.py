"""`replay --to wandb --follow` of a run still recording: an artifact version logged while the
recording process is alive (tests/live_artifact_script.py) is logged by a chunk the follow
publishes before that process ends, and once across all of the follow's chunks (read back
from the published .wandb logs, each file checked against its digest)."""

import json
import os
import subprocess
import sys
import time

import wandb_log
from tfblackbox.cli.exits import EXIT_OK

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "live_artifact_script.py")


def wait_until(what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s"
        time.sleep(0.1)


def test_follow_logs_an_artifact_version_of_a_live_run_once(tmp_path):
    store, wdir = str(tmp_path / "store"), tmp_path / "wandb"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_SILENT="true", TFBLACKBOX_FOLLOW_POLL_SECS="0.3")
    rec = subprocess.Popen([sys.executable, SCRIPT, store, str(tmp_path)], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    follow = None
    try:
        assert rec.stdout.readline().strip() == "recorded", rec.stderr.read()[-3000:]
        follow = subprocess.Popen(
            [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", store, "--to",
             "wandb", "--mode", "offline", "--wandb-dir", str(wdir), "--follow",
             "--no-progress", "--json"],
            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # the follow pushes what is recorded so far: no artifact yet
        wait_until(lambda: wandb_log.run_files(str(wdir)))
        assert wandb_log.artifacts(wdir) == {}
        (tmp_path / "go1").touch()
        assert rec.stdout.readline().strip() == "logged", rec.stderr.read()[-3000:]
        wait_until(lambda: wandb_log.artifacts(wdir))
        assert rec.poll() is None, "the recording ended before the follow logged the version"
        assert len(wandb_log.run_files(str(wdir))) >= 2    # a later chunk than the first
        (tmp_path / "go2").touch()
        _out, err = rec.communicate(timeout=120)
        assert rec.returncode == 0, err[-3000:]
        out, err = follow.communicate(timeout=120)
        assert follow.returncode == EXIT_OK, err[-3000:]
    finally:
        for p in (rec, follow):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    result = json.loads(out)["runs"][0]
    assert result["ok"] and result["complete"] and result["artifacts"] == 1
    weights = (tmp_path / "weights.bin").read_bytes()
    assert wandb_log.artifacts(wdir) == {"live": [("weights", ["latest"], [weights])]}
    steps = [row["_step"] for f in wandb_log.run_files(str(wdir))
             for row in wandb_log.history(f)]
    assert sorted(steps) == list(range(10))
