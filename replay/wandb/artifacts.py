"""A recorded run's artifact versions (recorder.log_artifact, ModelCheckpoint, CheckpointHook)
logged into its replayed W&B run, each once.

What W&B gets is what `wandb.log_artifact` gives it in an offline run (wandb 0.31: the run's
`_log_artifact` -> `interface.publish_artifact`): one ArtifactRecord per version in the chunk's
transaction log, with the name, type, aliases and metadata as recorded, and a manifest whose
entries (path, MD5 digest, size) and whose digest wandb itself computes from the files, as it
does for the training's own files. A name the recorder built from the run id
(`run_<run id>_model`, `run-<run id>-<file>`) carries the replayed W&B run id instead when the
two differ (naming.wandb_run_id), as wandb would have named it in that run.

Where the files are. Each manifest entry's `local_path` is the file `wandb sync` uploads. It is
never the store's blob: wandb-core deletes every local file of an artifact record it syncs
once the upload is over (core/pkg/artifacts/saver.go, deleteStagingFiles: a synced record
carries no staging dir, and every path has the empty prefix). So each file is hard-linked from
its blob (no bytes copied) or, where no link can be made (object storage, another file
system), copied, into the chunk's own run dir, `tfblackbox-artifacts/<version id>/<n>`, and
the entry names the path it has once the chunk is published (offline: in --wandb-dir; online
the chunk is synced from where it was written). The files go where the chunk goes: a chunk a
killed replay never published is deleted with its staging dir, a published one carries them
until `wandb sync` uploads (and removes) them.

Exactly once. The chunk record lists the versions it logged (`chunk["artifacts"]`); it joins
the cursor state with the rest of the chunk (push._committed) only once the chunk is
published (offline) or synced (online). A version is logged again only by a chunk whose
predecessor never reached W&B. `--no-artifacts` leaves them out of the chunk and out of the
cursor: a later replay without it logs them.
"""

import os
import shutil
import sys

LINK_DIR = "tfblackbox-artifacts"


class Artifacts:
    def __init__(self, store, run_id, wandb_id, versions, done):
        self.store = store
        self.run_id = run_id
        self.wandb_id = wandb_id
        self.versions = versions   # [ArtifactVersion] to log, in registration order
        self.done = done           # {"versions": [version ids logged], "skipped": [...]}
        self.logged = []           # [(version id, W&B name, W&B digest)] of this chunk
        self.warnings = []

    @classmethod
    def load(cls, store, run_id, wandb_id, state, enabled=True):
        """The versions of `run_id` that the cursor `state` has not logged (none when
        `enabled` is False: --no-artifacts)."""
        done = _done(state)
        if not enabled:
            return cls(store, run_id, wandb_id, [], done)
        seen = set(done["versions"]) | set(done["skipped"])
        versions = [v for v in _registered(store, run_id) if v.version_id not in seen]
        return cls(store, run_id, wandb_id, versions, done)

    @property
    def pending(self):
        return bool(self.versions)

    def counts(self):
        return {"versions": len(self.versions),
                "files": sum(len(v.files) for v in self.versions),
                "bytes": sum(f.size for v in self.versions for f in v.files)}

    @property
    def progress(self):
        return self.done

    # -- logging ----------------------------------------------------------------------------

    def publish(self, run, sync_dir, final_dir):
        """Logs every pending version into `run` (before finish), its files placed under
        `sync_dir` and named as they will be under `final_dir` (the published chunk)."""
        if not self.versions:
            return
        import wandb
        for v in self.versions:
            art = self._artifact(wandb, v, sync_dir, final_dir)
            if art is None:
                self.done["skipped"].append(v.version_id)
                continue
            run.log_artifact(art, aliases=list(v.aliases))
            self.done["versions"].append(v.version_id)
            self.logged.append((v.version_id, art.name, art.digest))

    def _artifact(self, wandb, version, sync_dir, final_dir):
        name = replayed_name(version.name, self.run_id, self.wandb_id)
        try:
            art = wandb.Artifact(name, type=version.type, metadata=dict(version.metadata or {}))
        except ValueError as e:
            return self._skip(version, f"W&B refuses it: {e}")
        folder = os.path.join(sync_dir, LINK_DIR, str(version.version_id))
        os.makedirs(folder, exist_ok=True)
        for n, f in enumerate(version.files):
            placed = os.path.join(folder, str(n))
            try:
                place_blob(self.store, f.sha256, placed)
            except (OSError, ValueError) as e:
                return self._skip(version, f"its file {f.path!r} (sha256 {f.sha256}) cannot be "
                                           f"read from the store: {e}")
            # immutable: wandb hashes the placed file and keeps its path, with no copy of
            # its own into its staging area; the path recorded is the published one
            entry = art.add_file(placed, name=f.path, policy="immutable")
            entry.local_path = os.path.join(final_dir, os.path.relpath(placed, sync_dir))
        return art

    def _skip(self, version, why):
        msg = (f"run {self.run_id}: artifact {version.name}:v{version.version} (version id "
               f"{version.version_id}) not logged: {why}")
        self.warnings.append(msg)
        print(f"warning: {msg}", file=sys.stderr)
        return None


def replayed_name(name, run_id, wandb_id):
    """The artifact's name in the replayed W&B run: a name the recorder derived from the run
    id (`run_<id>_model` of ModelCheckpoint, `run-<id>-<file>` of log_artifact) with the
    replayed run's W&B id; any other name as recorded."""
    if run_id == wandb_id:
        return name
    for pre, post in (("run_", "_"), ("run-", "-")):
        head = f"{pre}{run_id}{post}"
        if name.startswith(head):
            return f"{pre}{wandb_id}{post}{name[len(head):]}"
    return name


def place_blob(store, sha256, dest):
    """Puts the blob's bytes at `dest`: a hard link to the stored blob where the store is
    local and on the same file system, else a copy read through the store."""
    local = store.local_artifact_path(sha256)
    if local is not None:
        try:
            os.link(local, dest)
            return
        except OSError:
            pass   # another file system, or links not allowed: copy
    with store.open_artifact_file(sha256) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 8 << 20)


def _registered(store, run_id):
    """The run's versions; a store from before artifacts has none."""
    fn = getattr(store, "artifacts", None)
    return list(fn(run_id)) if fn is not None else []


def _done(state):
    done = dict((state or {}).get("artifacts") or {})
    return {"versions": [int(v) for v in done.get("versions", [])],
            "skipped": [int(v) for v in done.get("skipped", [])]}

