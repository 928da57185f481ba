"""Facts about the recording process for the run record (never touches the network)."""

import os
import platform
import shlex
import socket
import subprocess
import sys


def git_commit(cwd=None):
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def tf_version():
    """TensorFlow's version if it is already imported; the recorder never imports it here."""
    tf = sys.modules.get("tensorflow")
    return getattr(tf, "__version__", None) if tf is not None else None


def describe():
    from tfblackbox.schema.store.migrate import package_version
    return dict(host=socket.gethostname(), pid=os.getpid(),
                command=shlex.join([sys.executable] + sys.argv),
                python_version=platform.python_version(), tf_version=tf_version(),
                tfblackbox_version=package_version(), git_commit=git_commit())
