"""The facts of W&B's environment records, gathered at `init` (never touches the network).

The keys are the field names of wandb's `EnvironmentRecord` (wandb_internal.proto), filled as
wandb 0.31 fills them: the process part as the SDK's settings compute it (os, python, program,
code_path, code_path_local, args, executable, root, host, git) and the machine part as
wandb-core's system monitor probes it (core/internal/monitor/system.go: cpu counts, memory
and disk totals, SLURM_* variables; the GPU part through NVML, nvml.py). `username` is
$WANDB_USERNAME, else the OS user (W&B's is the logged-in account, which an air-gapped run
does not have). What cannot be found is left out, as wandb leaves it empty.
"""

import getpass
import os
import platform
import socket
import subprocess
import sys
import uuid

DISK_PATHS = ("/",)   # wandb's default x_stats_disk_paths


def _git(*args, cwd=None):
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit(cwd=None):
    out = _git("rev-parse", "HEAD", cwd=cwd)
    return out.decode(errors="replace").strip() or None if out else None


def git_root(cwd=None):
    out = _git("rev-parse", "--show-toplevel", cwd=cwd)
    return out.decode(errors="replace").strip() or None if out else None


def _remote_url(cwd=None):
    from urllib.parse import urlparse, urlunparse
    out = _git("config", "--get", "remote.origin.url", cwd=cwd)
    url = out.decode(errors="replace").strip() if out else ""
    if not url:
        return None
    parsed = urlparse(url)   # no password kept, as wandb's remote_url_without_password
    if parsed.hostname is None or parsed.password is None:
        return url
    host = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
    return urlunparse(parsed._replace(netloc=f"{parsed.username}:@{host}"))


def program():
    """wandb's settings._get_program: $WANDB_PROGRAM, the main file, or `-m module`."""
    if os.environ.get("WANDB_PROGRAM"):
        return os.environ["WANDB_PROGRAM"]
    main = sys.modules.get("__main__")
    try:
        if getattr(main, "__spec__", None) is None:
            return main.__file__
        return f"-m {main.__spec__.name}"
    except AttributeError:
        return None


def relpath(prog, root):
    """wandb's _get_program_relpath: the program relative to root, if it is below it."""
    if not prog or not root:
        return None
    full = os.path.join(root, os.path.relpath(os.getcwd(), root), prog)
    if not os.path.exists(full):
        return None
    rel = os.path.relpath(full, start=root)
    return None if "../" in rel else rel


def process_facts(started_at):
    """The process part: os, python, program, code paths, args, executable, root, host,
    username, git, started_at."""
    prog = program()
    root = git_root()
    facts = {
        "os": platform.platform(aliased=True),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "started_at": started_at,
        "args": list(sys.argv[1:]),
        "program": prog or "<python with no main file>",
        "code_path": relpath(prog, root or os.getcwd()),
        "code_path_local": relpath(prog, os.getcwd()),
        "root": os.path.abspath(os.getcwd()),
        "host": socket.gethostname(),
        "username": os.environ.get("WANDB_USERNAME") or _user(),
        "executable": sys.executable or "python3",
        "docker": os.environ.get("WANDB_DOCKER"),
    }
    commit, remote = git_commit(), _remote_url()
    if commit or remote:
        facts["git"] = {k: v for k, v in (("remote_url", remote), ("commit", commit)) if v}
    return {k: v for k, v in facts.items() if v not in (None, "", [])}


def _user():
    try:
        return getpass.getuser()
    except Exception:   # no name for this uid (a container)
        return None


def machine_facts(psutil):
    """The machine part as wandb-core probes it: cpu counts and model, memory and disk
    totals, SLURM_* variables."""
    facts = {}
    physical, logical = psutil.cpu_count(logical=False), psutil.cpu_count(logical=True)
    if physical:
        facts["cpu_count"] = physical
    if logical:
        facts["cpu_count_logical"] = logical
    model = cpu_model()
    if model:
        facts["cpu"] = {"model": model}
    facts["memory"] = {"total": psutil.virtual_memory().total}
    disk = {}
    for path in DISK_PATHS:
        try:
            usage = psutil.disk_usage(path)
        except OSError:
            continue
        disk[path] = {"total": usage.total, "used": usage.used}
    if disk:
        facts["disk"] = disk
    slurm = {k[len("SLURM_"):].lower(): v for k, v in os.environ.items()
             if k.startswith("SLURM_")}
    if slurm:
        facts["slurm"] = slurm
    return facts


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def new_writer_id():
    return str(uuid.uuid4())
