"""A real MLflow tracking server for the MLflow replay tests (the full `mlflow` package, a test
extra): `mlflow server` in a child process on a free 127.0.0.1 port, its runs in a SQLite
database and its artifacts served from a directory, both in a temp dir; stopped by close()."""

import os
import shutil
import subprocess
import sys
import tempfile

from servers import _wait_port, free_port, stop


class MlflowServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tfblackbox-mlflow-")
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{os.path.join(self.dir, 'mlflow.db')}",
             "--artifacts-destination", os.path.join(self.dir, "artifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir,
            env={**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"})
        try:
            _wait_port(self.port, 120, self.proc, "mlflow server")
        except BaseException:
            self.close()
            raise

    @property
    def uri(self):
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        stop(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
