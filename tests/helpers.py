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
