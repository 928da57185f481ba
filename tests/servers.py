"""Real servers the cluster tests start themselves, on 127.0.0.1 ports, in temp directories:

- PostgreSQL from Debian's `postgresql` package (tools/test installs it when missing): initdb
  and pg_ctl into a fresh data directory; as root they run as the `postgres` user, since
  PostgreSQL refuses to run as root. Trust authentication on 127.0.0.1 only.
- An S3-compatible server: moto's server mode (`moto[server]`, a test extra) in a child
  process, for pyarrow's S3 filesystem. Credentials are dummies set in the environment.
"""

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc, secs=10):
    """Terminates a server process, killing it if it has not ended after `secs`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(secs)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_port(port, secs, proc=None, what="server"):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it listened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {secs} s")


def postgres_bin():
    """The directory of initdb/pg_ctl: the newest /usr/lib/postgresql/<v>/bin, else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    on_path = shutil.which("pg_ctl")
    if on_path:
        return os.path.dirname(os.path.realpath(on_path))
    raise RuntimeError("PostgreSQL's initdb/pg_ctl are not installed; tools/test installs "
                       "Debian's postgresql package (apt-get install postgresql)")


class PostgresServer:
    """One PostgreSQL server for a test session; `database()` makes a fresh database."""

    def __init__(self, fsync=False):
        self.fsync = fsync       # off for tests (speed); on for benchmarks (a real server's cost)
        self.bin = postgres_bin()
        self.dir = tempfile.mkdtemp(prefix="tfblackbox-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        self.start()

    def _run(self, tool, *args, check=True):
        cmd = [os.path.join(self.bin, tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return proc

    def start(self):
        # -F: no fsync (a test server); the socket directory is the server's own temp dir
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w", "-t",
                  "60", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir} "
                              f"{'' if self.fsync else '-F '}-c max_connections=200", "start")

    def stop(self):
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", check=False)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database="postgres", user="postgres"):
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement, database="postgres"):
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname=database, autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else None

    def database(self):
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


class S3Server:
    """moto's S3 server in a child process; `bucket()` makes a fresh bucket and returns a
    data URI for it that pyarrow opens (endpoint and scheme in the URI, keys from the env)."""

    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(self.port, 60, self.proc, "moto_server")
        except BaseException:
            self.close()
            raise

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.port}"

    def filesystem(self):
        import pyarrow.fs as pafs
        return pafs.S3FileSystem(endpoint_override=self.endpoint, scheme="http",
                                 access_key=S3_ENV["AWS_ACCESS_KEY_ID"],
                                 secret_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                                 region=S3_ENV["AWS_DEFAULT_REGION"],
                                 allow_bucket_creation=True)

    def bucket(self, prefix="store"):
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.filesystem().create_dir(name)
        return f"s3://{name}/{prefix}?endpoint_override={self.endpoint}&scheme=http"

    def close(self):
        stop(self.proc)
