"""Small helpers many test files share: rows to write into a store, and the environment of a
child process that records (tests run real training in subprocesses, e.g. to kill them)."""

import os

import pyarrow as pa
import pytest


def scalars(steps, attempt, tag="loss", values=None, offset=0.0):
    """A scalars table of `steps` written by `attempt`: wall time 1000 + step, value step +
    offset (or `values`)."""
    n = len(steps)
    return pa.table({"step": steps, "wall_time": [1000.0 + s for s in steps], "tag": [tag] * n,
                     "attempt": [attempt] * n,
                     "value": values if values is not None else [float(s) + offset
                                                                 for s in steps]})


def under_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what, why):
    """A test's server, browser, library or privilege is not here. Outside CI the test is
    skipped with the reason; under CI (CI=true), where tools/test installs everything, a test
    that cannot run is a failure, never a silent skip."""
    message = f"{what} is not available here: {why}"
    if under_ci():
        pytest.fail(f"{message} (CI must run every test: tools/test installs what they need)",
                    pytrace=False)
    pytest.skip(message)


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def child_env(**extra):
    """The environment of a child that trains or replays: quiet TensorFlow and W&B, unbuffered
    output, the tests folder importable (for the *_script.py programs), and no WANDB_SERVICE:
    after an in-process wandb.init a child would otherwise share this process's wandb-core (and
    a killed child's run would stay open in it). `extra` overrides any of these."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    path = [TESTS_DIR] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update(TF_CPP_MIN_LOG_LEVEL="3", WANDB_SILENT="true", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(path))
    env.update(extra)
    return env


def train_while_following(script, args, store, wandb_dir, cwd, env, follow_env):
    """Runs `python script *args` (a training program that prints "started" once its run is
    recording) and, as soon as it has, `replay --to wandb --mode offline --follow --json` of
    `store` into `wandb_dir`; waits for both and returns the replay's stdout. Either process
    left running (a failed assertion) is killed."""
    import subprocess
    import sys
    train = subprocess.Popen([sys.executable, script, *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=str(cwd))
    follow = None
    try:
        assert train.stdout.readline().strip() == "started", train.stderr.read()[-3000:]
        follow = subprocess.Popen(
            [sys.executable, "-m", "tfblackbox.cli.main", "replay", "--store", str(store),
             "--to", "wandb", "--mode", "offline", "--wandb-dir", str(wandb_dir),
             "--no-progress", "--follow", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(cwd),
            env=follow_env)
        _, err = train.communicate(timeout=300)
        assert train.returncode == 0, err[-3000:]
        followed, ferr = follow.communicate(timeout=300)
        assert follow.returncode == 0, ferr[-3000:]
        return followed
    finally:
        for p in (train, follow):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
