"""A recorded run's artifact versions (recorder.log_artifact, ModelCheckpoint, CheckpointHook)
logged into its MLflow run, each once.

MLflow has no artifact versions of its own, so each version becomes a folder of the run's
artifacts: `artifacts/<name>/v<N>/<file path>` with the version's files as recorded, and
`artifacts/<name>/v<N>/version.json` with what MLflow cannot hold otherwise (type, aliases,
metadata, step, time, and each file's sha256 and size).

Exactly once. The cursor state lists the versions logged (`artifacts`: their tokens, which
name the logging event across stores). A version is uploaded, then its token joins the state
and the cursor is written (one catalog write a version); a replay killed in between uploads
that version's files again to the same paths (MLflow overwrites them with the same bytes),
so the version still appears once. `--no-artifacts` logs none and records none: a later
replay without it logs them.
"""

import json
import os
import shutil
import tempfile

from tfblackbox.schema import BlackboxError
from tfblackbox.schema.kill_points import kill_point

from .content import safe_path

ROOT = "artifacts"
CHUNK = 1 << 20


def version_key(version):
    """What the cursor state records of a logged version: its token (its id when a store
    predates tokens)."""
    return version.token or f"id:{version.version_id}"


def version_dir(version):
    """The version's folder in the MLflow run's artifacts."""
    return f"{ROOT}/{safe_path(version.name).replace('/', '_')}/v{version.version}"


def todo(store, run_id, state):
    """The run's versions, in registration order, that the cursor `state` has not logged."""
    done = set(state.get("artifacts") or ())
    return [v for v in store.artifacts(run_id) if version_key(v) not in done]


def counts(versions):
    return {"versions": len(versions), "files": sum(len(v.files) for v in versions),
            "bytes": sum(f.size for v in versions for f in v.files)}


def describe(version):
    """version.json: what the version is beyond its files' bytes."""
    return {"name": version.name, "version": version.version, "type": version.type,
            "aliases": list(version.aliases), "metadata": dict(version.metadata or {}),
            "step": version.step, "time": version.wall_time,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size}
                      for f in version.files]}


def push(client, store, run_id, mrun, save_state, state, result):
    """Logs every version not logged yet into MLflow run `mrun`; after each, its key joins
    `state` and `save_state()` writes the cursor."""
    done = state.setdefault("artifacts", [])
    for version in todo(store, run_id, state):
        with tempfile.TemporaryDirectory(prefix="tfblackbox-mlflow-") as tmp:
            folder = os.path.join(tmp, *version_dir(version).split("/"))
            os.makedirs(folder)
            try:
                for f in version.files:
                    target = os.path.join(folder, *f.path.split("/"))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with store.open_artifact_file(f.sha256) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
            except (OSError, BlackboxError) as e:   # a damaged store: the rest still goes
                _warn(result, f"artifact {version.name}:v{version.version} not logged (a "
                              f"later replay tries again): file {f.path!r} (sha256 "
                              f"{f.sha256}) cannot be read from the store: {e}")
                continue
            with open(os.path.join(folder, "version.json"), "w", encoding="utf-8") as out:
                json.dump(describe(version), out, indent=1, sort_keys=True, default=str)
            client.log_artifacts(mrun, tmp)
        kill_point("mlflow-artifact")   # uploaded, not yet in the cursor
        done.append(version_key(version))
        save_state()
        result["artifacts"]["versions"] += 1
        result["artifacts"]["files"] += len(version.files)


def _warn(result, msg):
    if msg not in result["warnings"]:
        result["warnings"].append(msg)
