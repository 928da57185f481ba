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
            skip_or_fail_without_mount(f"cannot mount a small tmpfs here (needs root): "
                                       f"{proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def skip_or_fail_without_mount(reason):
    """A test that needs a small file system of its own: skipped where mounting one is not
    permitted, failed under CI=true (CI runs as root: a skip there would hide a regression)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the disk-full tests must run)")
    pytest.skip(reason)


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
    server = PostgresServer()
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
    server = S3Server()
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
