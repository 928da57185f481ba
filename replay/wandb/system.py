"""What a W&B run gets of the machine it trained on (recorder/system/): the environment
records, the job type, the run's files (requirements.txt, saved code, git diffs) and the
system metrics, each pushed once.

- Environment: per recorded attempt, two EnvironmentRecords as wandb-core writes them (the
  process part, then the machine part: monitor.go's probeExecutionContext and
  probeResources), with the attempt's writer id and start time. The replay's own machine
  facts stay out (push._settings turns wandb's off); the run record's host and git are the
  training's (`settings`).
- Files: written into the W&B run's files dir under their recorded paths and published as
  one FilesRecord, as wandb-core does for requirements.txt and save_code.
- Stats: one StatsRecord per sample (type SYSTEM) with its recorded time, before the run's
  exit record (wandb drops stats after it).

The cursor state keeps what was pushed (`state["system"]`: attempts whose environment went,
files by path and sha256, and per attempt the last sample number), so a later chunk pushes
only what is new.
"""

import json
import os
import sys

from tfblackbox.schema.codecs import run_files, system_read

# the EnvironmentRecord fields wandb-core sends in its first record (the process); the rest
# go in the second (the machine), as it does
PROCESS_FIELDS = ("os", "python", "started_at", "docker", "args", "program", "code_path",
                  "code_path_local", "git", "email", "root", "host", "username", "executable",
                  "colab")


class System:
    def __init__(self, store, environments, files, samples, job_type, done):
        self.store = store
        self.environments = environments   # [(attempt, env)] not pushed yet
        self.files = files                 # [{"path", "sha256", "size"}] not pushed yet
        self.samples = samples             # [Sample] not pushed yet
        self.job_type = job_type
        self.done = done                   # what earlier chunks pushed (cursor state)
        self.warnings = []
        self.pushed = {"environments": 0, "files": 0, "stats": 0}

    @classmethod
    def load(cls, store, run_id, state):
        done = _done(state)
        envs = system_read.environments(store, run_id)
        latest = envs[-1][1] if envs else {}
        new_envs = [(a, e) for a, e in envs if a not in done["environments"]]
        seen, files = {tuple(f) for f in done["files"]}, []
        for _a, ref in system_read.files(store, run_id):
            key = (ref["path"], ref["sha256"])
            if key not in seen:
                seen.add(key)
                files.append(ref)
        samples = [s for s in system_read.samples(store, run_id)
                   if s.seq > done["stats"].get(str(s.attempt), -1)]
        system = cls(store, new_envs, files, samples, system_read.job_type(store, run_id),
                     done)
        system.latest = latest
        return system

    @property
    def pending(self):
        return bool(self.environments or self.files or self.samples)

    def counts(self):
        return {"environments": len(self.environments), "files": len(self.files),
                "stats": len(self.samples)}

    def settings(self):
        """wandb.Settings fields for the run record: the training's host and git."""
        env, out = self.latest, {}
        if env.get("host"):
            out["host"] = env["host"]
        git = env.get("git") or {}
        if git.get("commit"):
            out["git_commit"] = git["commit"]
        if git.get("remote_url"):
            out["git_remote_url"] = git["remote_url"]
        return out

    # -- pushing ----------------------------------------------------------------------------

    def publish(self, run):
        """Sends the environment records, files and stats of this chunk (before finish)."""
        from wandb.proto import wandb_internal_pb2 as pb
        iface = run._interface
        for attempt, env in self.environments:
            for part in environment_records(pb, env):
                iface._publish_environment(part)
            self.done["environments"].append(attempt)
            self.pushed["environments"] += 1
        self._publish_files(pb, iface, run.settings.files_dir)
        for s in self.samples:
            iface._publish(iface._make_record(stats=stats_record(pb, s)))
            key = str(s.attempt)
            self.done["stats"][key] = max(self.done["stats"].get(key, -1), s.seq)
            self.pushed["stats"] += 1

    def _publish_files(self, pb, iface, files_dir):
        if not self.files:
            return
        blobs = run_files.read_blobs(self.store, {f["sha256"] for f in self.files})
        items = []
        for ref in self.files:
            data = blobs.get(ref["sha256"])
            path = _safe_path(files_dir, ref["path"])
            if data is None or path is None:
                msg = f"file {ref['path']!r}: " + (
                    "its content is not in the store" if data is None else
                    "its path leaves the run's files dir") + "; not pushed"
                self.warnings.append(msg)
                print(f"warning: {msg}", file=sys.stderr)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            items.append(pb.FilesItem(path=ref["path"], type=pb.FilesItem.WANDB))
            self.done["files"].append([ref["path"], ref["sha256"]])
        if items:
            iface._publish_files(pb.FilesRecord(files=items))
            self.pushed["files"] += len(items)

    @property
    def progress(self):
        return self.done


def _done(state):
    done = dict((state or {}).get("system") or {})
    return {"environments": list(done.get("environments", [])),
            "files": [list(f) for f in done.get("files", [])],
            "stats": dict(done.get("stats", {}))}


def _safe_path(files_dir, rel):
    """The file's place in files_dir, or None for a path that would leave it."""
    if not rel or os.path.isabs(rel) or "\0" in rel:
        return None
    path = os.path.normpath(os.path.join(files_dir, rel))
    return path if path.startswith(os.path.normpath(files_dir) + os.sep) else None


def environment_records(pb, env):
    """The two EnvironmentRecords of one attempt's environment dict."""
    process, machine = pb.EnvironmentRecord(), pb.EnvironmentRecord()
    for key, value in env.items():
        target = process if key in PROCESS_FIELDS else machine
        if key == "started_at":
            target.started_at.FromNanoseconds(int(value * 1e9))
        elif key == "git":
            target.git.remote_url = value.get("remote_url", "")
            target.git.commit = value.get("commit", "")
        elif key == "args":
            target.args.extend(value)
        elif key == "disk":
            for path, d in value.items():
                target.disk[path].total, target.disk[path].used = d["total"], d["used"]
        elif key == "memory":
            target.memory.total = value["total"]
        elif key == "cpu":
            target.cpu.model = value.get("model", "")
        elif key == "gpu_nvidia":
            for g in value:
                target.gpu_nvidia.add(**{k: v for k, v in g.items()
                                         if k in pb.GpuNvidiaInfo.DESCRIPTOR.fields_by_name})
        elif key == "slurm":
            target.slurm.update(value)
        elif key in pb.EnvironmentRecord.DESCRIPTOR.fields_by_name:
            setattr(target, key, value)
    machine.writer_id = process.writer_id = env.get("writer_id", "")
    return [process, machine]


def stats_record(pb, sample):
    record = pb.StatsRecord(stats_type=pb.StatsRecord.SYSTEM)
    record.timestamp.FromNanoseconds(int(sample.wall_time * 1e9))
    for key, value in sample.values.items():
        record.item.add(key=key, value_json=json.dumps(value))
    return record
