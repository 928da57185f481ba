import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
sys.path.insert(0, os.path.dirname(__file__))   # tests import their small helper modules

import pytest  # noqa: E402


@pytest.fixture
def store_dir(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def graph():
    """A fresh TF1 graph as default, so tests do not see each other's summaries."""
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    g = tf.Graph()
    with g.as_default():
        yield g


@pytest.fixture(autouse=True)
def _no_active_run():
    yield
    from tfblackbox.recorder import run as run_mod
    if run_mod.active_run() is not None:
        run_mod.finish()
