"""Named points at which the tests stop a process with SIGKILL (TFBLACKBOX_TEST_KILL_AT=<name>),
to check that a kill there leaves the store consistent."""

import os


def kill_point(name):
    if os.environ.get("TFBLACKBOX_TEST_KILL_AT") == name:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
