"""Where `replay --to mlflow` writes: the tracking URI, the experiments, and the MLflow run of
each recorded run, found again by the tag RUN_ID_TAG. Everything that can refuse the replay is
checked here before anything is written (`Tracking.preflight`): the URI's form, that the
server or database answers, the experiments, and MLflow runs of the same name that are not
the recorded run's (BlackboxError: exit 2)."""

import contextlib
import hashlib
import os
import urllib.parse

from tfblackbox.schema import BlackboxError

RUN_ID_TAG = "tfblackbox.run_id"
DB_SCHEMES = ("postgresql", "mysql", "mssql")
PROBE_SECS = 15         # how long the checks wait for a server or database that does not answer


def display_uri(uri):
    """The URI without a user name or password (never printed or kept in the catalog)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def scheme_of(uri):
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if len(scheme) == 1:      # a Windows drive letter: a path
        return ""
    return scheme.split("+")[0]   # postgresql+psycopg -> postgresql


def normalize(uri):
    """The URI as the replay uses it and keys its cursor by: a folder or a SQLite file made
    absolute (the same store whatever the working directory)."""
    scheme = scheme_of(uri)
    if scheme == "":
        return os.path.abspath(uri)
    if scheme == "file":
        return "file://" + os.path.abspath(urllib.parse.urlsplit(uri).path)
    if scheme == "sqlite" and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rest = uri[len("sqlite:///"):]
        if rest and rest != ":memory:":
            return "sqlite:///" + os.path.abspath(rest)
    return uri


def check_uri(uri):
    """Refuses a URI MLflow cannot take, naming it; returns it as MLflow will get it (a folder
    made absolute). A local folder is MLflow's file store, which MLflow 3 keeps in
    maintenance mode behind MLFLOW_ALLOW_FILE_STORE: naming a folder is asking for it, so the
    replay allows it for this process."""
    if not uri:
        raise BlackboxError("--to mlflow needs --tracking-uri URI: an MLflow server "
                            "(http://host:5000), a database URL (sqlite:///mlflow.db, "
                            "postgresql://...) or a local folder")
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    known = sorted(s for s in _tracking_store_registry._registry if s)
    scheme = scheme_of(uri)
    if scheme and scheme not in known:
        raise BlackboxError(
            f"--tracking-uri {display_uri(uri)!r}: MLflow has no tracking store for the scheme "
            f"{scheme!r}; expected one of {', '.join(known)}, or a local folder")
    if scheme in ("", "file"):
        path = urllib.parse.urlsplit(uri).path if scheme == "file" else uri
        path = os.path.abspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise BlackboxError(f"--tracking-uri {uri!r} is a file, not a folder: a local "
                                f"MLflow store is a folder (or use sqlite:///{path})")
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return normalize(uri)
    if scheme == "sqlite":
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        parent = os.path.dirname(os.path.abspath(path)) if path else ""
        if path and path != ":memory:" and not os.path.isdir(parent):
            raise BlackboxError(f"--tracking-uri {uri!r}: the folder {parent} of the database "
                                f"file does not exist")
    if scheme in DB_SCHEMES:
        _probe_database(uri)
    return normalize(uri)


def _probe_database(uri):
    """A server database answers within PROBE_SECS, or the replay stops naming it (MLflow's
    own engine would retry for minutes)."""
    import sqlalchemy
    args = {"connect_timeout": PROBE_SECS} if scheme_of(uri) in ("postgresql", "mysql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BlackboxError(f"--tracking-uri {display_uri(uri)}: the database cannot be "
                            f"reached ({first})") from e


@contextlib.contextmanager
def quick_requests():
    """MLflow's HTTP client retries a server that does not answer for minutes; the checks
    before the replay ask once, with a short timeout."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                            "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(PROBE_SECS)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def destination(uri, experiment):
    """The cursor key of (tracking URI, experiment): at most 256 characters."""
    key = f"mlflow:{display_uri(uri)}:{experiment}"
    if len(key) > 256:
        key = key[:200] + ":" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return key


def _message(e):
    text = str(e).strip()
    return text.splitlines()[0][:500] if text else type(e).__name__


class Tracking:
    """One tracking URI: its client, the experiments by name, and the MLflow run ids of the
    recorded runs found there."""

    def __init__(self, uri, artifact_location=None):
        # MLflow prints "View run ... at: URL" on stdout when a run ends: our stdout is ours
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient
        self.uri = uri
        self.shown = display_uri(uri)
        self.artifact_location = artifact_location
        self.client = MlflowClient(tracking_uri=uri)
        self.experiments = {}      # name -> experiment id (None: to be created)
        self.found = {}            # recorded run id -> MLflow run id (tagged with it)

    def preflight(self, plan):
        """plan: [(record, experiment name)]. Reads only; raises BlackboxError naming what
        refuses the replay, before anything is written."""
        from mlflow.entities import ViewType
        with quick_requests():
            try:
                for name in dict.fromkeys(exp for _r, exp in plan):
                    exp = self.client.get_experiment_by_name(name)
                    if exp is not None and exp.lifecycle_stage == "deleted":
                        raise BlackboxError(
                            f"MLflow experiment {name!r} at {self.shown} is deleted; restore it "
                            f"(mlflow experiments restore --experiment-id {exp.experiment_id}) "
                            f"or replay with another --experiment")
                    self.experiments[name] = exp.experiment_id if exp is not None else None
                foreign = []
                for record, name in plan:
                    exp_id = self.experiments[name]
                    if exp_id is None:
                        continue
                    ours = self.client.search_runs(
                        [exp_id], f"tags.`{RUN_ID_TAG}` = '{_quote(record.run_id)}'",
                        run_view_type=ViewType.ALL, max_results=10)
                    if ours:
                        self.found[record.run_id] = ours[0].info.run_id
                        if ours[0].info.lifecycle_stage == "deleted":
                            raise BlackboxError(
                                f"run {record.run_id}: its MLflow run {ours[0].info.run_id} in "
                                f"experiment {name!r} at {self.shown} is deleted; restore it "
                                f"(mlflow runs restore --run-id {ours[0].info.run_id}) or "
                                f"replay to another --experiment")
                    same_name = self.client.search_runs(
                        [exp_id], f"attributes.run_name = '{_quote(run_name(record))}'",
                        run_view_type=ViewType.ALL, max_results=50)
                    for other in same_name:
                        if other.data.tags.get(RUN_ID_TAG) != record.run_id:
                            foreign.append(f"run {record.run_id}: experiment {name!r} already "
                                           f"has a run named {run_name(record)!r} "
                                           f"(MLflow run {other.info.run_id}) that is not "
                                           f"its replay (no {RUN_ID_TAG} tag naming it)")
                if foreign:
                    raise BlackboxError(
                        "; ".join(foreign) + f" at {self.shown}: nothing was written; rename or "
                        f"delete that run, or replay with another --experiment")
            except BlackboxError:
                raise
            except Exception as e:
                raise BlackboxError(f"--tracking-uri {self.shown}: MLflow cannot be used "
                                    f"({_message(e)})") from e

    def experiment_id(self, name):
        """The experiment's id, creating it on first use (with --artifact-location)."""
        exp_id = self.experiments.get(name)
        if exp_id is None:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                try:
                    exp_id = self.client.create_experiment(
                        name, artifact_location=self.artifact_location)
                except Exception:
                    exp = self.client.get_experiment_by_name(name)   # another replay made it
                    if exp is None:
                        raise
                    exp_id = exp.experiment_id
            else:
                exp_id = exp.experiment_id
            self.experiments[name] = exp_id
        return exp_id

    def find_run(self, exp_id, run_id):
        """The MLflow run tagged with the recorded run id in the experiment, or None."""
        from mlflow.entities import ViewType
        runs = self.client.search_runs([exp_id], f"tags.`{RUN_ID_TAG}` = '{_quote(run_id)}'",
                                       run_view_type=ViewType.ALL, max_results=10)
        return runs[0].info.run_id if runs else None


def run_name(record):
    return record.name or record.run_id


def _quote(text):
    return str(text).replace("\\", "\\\\").replace("'", "\\'")


def held(client, mrun, keys, lo, hi):
    """The (key, step) pairs MLflow already holds of `keys` at lo <= step <= hi."""
    held = set()
    for key in keys:
        for m in client.get_metric_history(mrun, key):
            if lo <= m.step <= hi:
                held.add((key, m.step))
    return held
