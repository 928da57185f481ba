"""`tfblackbox show`: what a run recorded of its machine (recorder/system/): the environment
of each attempt, the job type, the run's files, the system metrics samples (count, keys, the
last one) and the samples taken at black-box triggers."""

from tfblackbox.schema.codecs import system_read

SHOWN_KEYS = ("cpu", "memory_percent", "proc.memory.rssMB", "proc.cpu.threads")


def describe(store, run_id):
    samples = system_read.samples(store, run_id)
    keys = sorted({k for s in samples for k in s.values})
    return {
        "job_type": system_read.job_type(store, run_id),
        "environments": [dict(env, attempt=a) for a, env in
                         system_read.environments(store, run_id)],
        "files": [dict(ref, attempt=a) for a, ref in system_read.files(store, run_id)],
        "system_metrics": {
            "samples": len(samples), "keys": keys,
            "first_time": samples[0].wall_time if samples else None,
            "last_time": samples[-1].wall_time if samples else None,
            "last": samples[-1].values if samples else None,
            "at_triggers": [{"reason": s.reason, "wall_time": s.wall_time, "values": s.values}
                            for s in samples if s.reason.startswith("trigger")]},
    }


def lines(info):
    out = []
    if info["job_type"]:
        out.append(f"  job_type {info['job_type']}")
    for env in info["environments"]:
        out.append(f"  environment (attempt {env['attempt']}): " + _env_line(env))
    for f in info["files"]:
        out.append(f"  file {f['path']} ({f['size']:,} bytes, sha256 {f['sha256'][:12]}, "
                   f"attempt {f['attempt']})")
    m = info["system_metrics"]
    if m["samples"]:
        last = ", ".join(f"{k}={m['last'][k]:.4g}" for k in SHOWN_KEYS if k in m["last"])
        out.append(f"  system metrics: {m['samples']} sample(s), {len(m['keys'])} key(s) "
                   f"({', '.join(k for k in m['keys'] if not k.startswith('disk.'))[:200]}"
                   f", disk.*); last: {last}")
        for s in m["at_triggers"]:
            values = ", ".join(f"{k}={s['values'][k]:.4g}" for k in SHOWN_KEYS
                               if k in s["values"])
            out.append(f"  system at {s['reason']}: {values}")
    return out


def _env_line(env):
    parts = [env.get("os"), env.get("python"), f"host={env.get('host')}"]
    if env.get("username"):
        parts.append(f"user={env['username']}")
    parts.append(f"program={env.get('program')}")
    if env.get("args"):
        parts.append(f"args={' '.join(env['args'])}")
    git = env.get("git") or {}
    if git:
        parts.append(f"git={git.get('remote_url', '-')}@{(git.get('commit') or '-')[:12]}")
    cpu = f"cpu={env.get('cpu_count', '?')}/{env.get('cpu_count_logical', '?')} cores"
    if (env.get("cpu") or {}).get("model"):
        cpu += f" {env['cpu']['model']}"
    parts.append(cpu)
    if env.get("memory"):
        parts.append(f"memory={env['memory']['total'] / 2**30:.1f} GiB")
    for path, d in (env.get("disk") or {}).items():
        parts.append(f"disk {path}={d['total'] / 2**30:.0f} GiB")
    if env.get("gpu_count"):
        parts.append(f"gpus={env['gpu_count']} x {env.get('gpu_type')}"
                     f" cuda={env.get('cuda_version', '-')}"
                     f" driver={env.get('nvidia_driver_version', '-')}")
    if env.get("slurm"):
        parts.append("slurm " + " ".join(f"{k}={v}" for k, v in sorted(env["slurm"].items())))
    return "  ".join(str(p) for p in parts if p)
