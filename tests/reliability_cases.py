"""The reliability suite of issue 15: its groups of cases, as plain functions returning a
`Result` (group, case, held: True/False, or None when the case could not run, detail, rows
lost in seconds of training).

    tools/reliability [--quick] [--only GROUP] [--json OUT]   # every group, one table
    tests/test_reliability.py                                 # one fast case of each group

Each group module under tests/reliability/ gives `cases(ws, rng, quick)`: (name, thunk) pairs,
the kill instants drawn from `rng` so a run can be repeated with its seed.
"""

import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # tests/ helpers (wandb_log)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from reliability import (bad_cli, bad_recorder, concurrent_writers, disk,  # noqa: E402
                         kill_replay_dumps, kill_replay_wandb, kill_training)
from reliability.common import Checks, Result, Workspace, guarded  # noqa: E402

__all__ = ["GROUPS", "Result", "Workspace", "run_groups", "bad_input_case"]


def bad_input_case(ws, name):
    """One bad-input case by name (from bad_cli.CASES or bad_recorder.CASES)."""
    fn = dict(bad_cli.CASES + bad_recorder.CASES)[name]

    def body():
        c = Checks(bad_cli.GROUP, name)
        fn(c, ws, ws.new(name))
        return c.result()
    return guarded(bad_cli.GROUP, name, body)


# the bad Summaries each run a TF training process (~5 s); --quick keeps two of them
_QUICK_SUMMARIES = {"summary-non-utf8-tag", "summary-not-a-protobuf"}


def bad_input_cases(ws, rng, quick):
    names = [n for n, _fn in bad_cli.CASES + bad_recorder.CASES
             if not (quick and n.startswith("summary-") and n not in _QUICK_SUMMARIES)]
    return [(n, lambda n=n: bad_input_case(ws, n)) for n in names]


GROUPS = {
    "kill-training": kill_training.cases,
    "kill-replay-wandb": kill_replay_wandb.cases,
    "kill-replay-debug-dump": kill_replay_dumps.cases,
    "kill-replay-tensorboard": kill_replay_dumps.tensorboard_cases,
    "disk-full": disk.full_cases,
    "read-only": disk.ro_cases,
    "bad-input": bad_input_cases,
    "concurrent-writers": concurrent_writers.cases,
}


def run_groups(groups=None, quick=False, seed=0, ws=None, report=None):
    """Runs the cases of `groups` (default all) in order; yields each Result as it comes and
    calls report(result) first if given."""
    ws = ws or Workspace()
    for group in groups or GROUPS:
        rng = random.Random(f"{seed}-{group}")   # a group's instants do not depend on others
        for name, thunk in GROUPS[group](ws, rng, quick):
            result = guarded(group, name, thunk)
            if report is not None:
                report(result)
            yield result
