"""Where a recorded run goes in W&B: its project, its W&B run id, and the cursor key of a
destination."""

import hashlib
import os
import re

_WANDB_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def wandb_run_id(run_id):
    """The W&B run id of a recorded run: the run id itself when W&B accepts it as is, else a
    sanitised form plus a hash of the original, so different run ids never share a W&B run."""
    if _WANDB_ID_RE.match(run_id):
        return run_id
    clean = re.sub(r"[^a-z0-9_-]", "-", run_id.lower()).strip("-")[:48] or "run"
    return f"{clean}-{hashlib.sha1(run_id.encode()).hexdigest()[:8]}"


def destination(opts, record):
    """The cursor key: mode, entity/project and, offline, the --wandb-dir written into."""
    where = f"{opts.entity or ''}/{project_of(opts, record)}"
    if opts.mode == "offline":
        return f"wandb-offline:{where}:{os.path.realpath(opts.wandb_dir)}"
    return f"wandb:{where}"


def project_of(opts, record):
    return opts.project or record.project or "tfblackbox"
