import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
sys.path.insert(0, os.path.dirname(__file__))   # tests import their small helper modules

import pytest  # noqa: E402

from helpers import missing  # noqa: E402

# What a test needs, as markers (pyproject.toml lists them), put on by what the test uses:
# fixtures for servers and privileges, TensorFlow or Keras named in its module.
_FIXTURE_MARKS = {"postgres": "postgres", "pg_url": "postgres", "s3": "s3", "s3_data": "s3",
                  "small_fs": "root", "graph": "tf"}
_TF_WORDS = ("import tensorflow", "import keras", "tensorflow as tf")


def pytest_collection_modifyitems(config, items):
    sources = {}
    for item in items:
        for fixture, mark in _FIXTURE_MARKS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(mark)
        path = str(item.fspath)
        if path not in sources:
            with open(path, encoding="utf-8") as f:
                sources[path] = any(w in f.read() for w in _TF_WORDS)
        if sources[path]:
            item.add_marker("tf")


def pytest_runtest_setup(item):
    if item.get_closest_marker("tf") is not None:
        import importlib.util
        if importlib.util.find_spec("tensorflow") is None:
            missing("TensorFlow", "pip install 'tfblackbox[tf]' (tools/test does)")
    if item.get_closest_marker("chromium") is not None:
        from tb_helpers import CHROMIUM
        if not os.path.exists(CHROMIUM):
            missing("Chromium", f"no {CHROMIUM}; Debian's chromium (tools/test installs it)")


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


@pytest.fixture
def small_fs(tmp_path):
    """A directory on a tmpfs of the given size (a full disk on demand); unmounted after."""
    import subprocess
    mounted = []

    def make(size="4m"):
        path = tmp_path / f"fs{len(mounted)}"
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            missing("a small tmpfs", f"mount needs root: {proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path, leave=0):
    """Fills the file system of `path` with one file, leaving about `leave` bytes free."""
    filler = os.path.join(str(path), "filler")
    free = os.statvfs(str(path)).f_bavail * os.statvfs(str(path)).f_frsize
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
        except OSError:
            pass
    return filler


# -- real servers for the cluster tests (tests/servers.py): one of each per session ----------

@pytest.fixture(scope="session")
def postgres():
    from servers import PostgresServer
    try:
        server = PostgresServer()
    except RuntimeError as e:
        missing("a PostgreSQL server", str(e))
    yield server
    server.close()


@pytest.fixture
def pg_url(postgres):
    """A fresh, empty PostgreSQL database (its SQLAlchemy URL)."""
    return postgres.database()


@pytest.fixture(scope="session")
def s3():
    from servers import S3_ENV, S3Server
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)   # pyarrow (and child processes) take the keys from here
    try:
        server = S3Server()
    except (ImportError, RuntimeError) as e:
        missing("an S3-compatible server (moto)", str(e))
    yield server
    server.close()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_data(s3):
    """A data URI in a fresh bucket of the test S3 server."""
    return s3.bucket()
