"""Facts about the recording process for the run record (never touches the network)."""

import os
import platform
import shlex
import socket
import sys

from .system.facts import git_commit


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
