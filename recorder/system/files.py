"""The files W&B keeps of a run besides its history, as wandb 0.31 writes them into the run's
files dir: `requirements.txt` always (the SDK's `publish_python_packages(working_set())`:
one `name==version` line per installed distribution, in importlib.metadata's order), and with
`save_code=True` the main program as `code/<its path below the git root or cwd>` and the git
diff against HEAD as `diff.patch`, plus against the upstream fork point as
`diff_<commit>.patch` (wandb-core's handleCodeSave / handlePatchSave: `git diff <ref>
--submodule=diff`, kept when not empty)."""

import contextlib
import email
import os
import re

from .facts import _git, git_root

# The end of a METADATA file's headers: its first empty line, as email's parser ends them
# (a line ends at \r\n, \r or \n, so after \n or \r a \n or \r that is not the \n of \r\n
# begins an empty line), or an empty first line.
_HEADERS_END = re.compile(r"\A[\r\n]|\n[\r\n]|\r\r|\r\n\r")


def requirements():
    from importlib.metadata import distributions
    lines = []
    for d in distributions():
        with contextlib.suppress(KeyError, UnicodeDecodeError, TypeError):
            name, version = name_version(d)
            lines.append(f"{name}=={version}\n")
    return "".join(lines).encode()


def name_version(dist):
    """(metadata['Name'], version) of an importlib.metadata Distribution, as those give them,
    from the metadata's headers alone. `dist.metadata` parses the whole file, the long
    description included, and `dist.version` parses it again: ~60 ms of every run's start
    for this venv's ~170 distributions."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("")
    end = _HEADERS_END.search(text)
    headers = email.message_from_string(text if end is None else text[:end.end()])
    return headers["Name"], headers["Version"]


def run_files(save_code, env):
    """[(path in the W&B files dir, bytes)] of the run; env: facts.process_facts()."""
    files = [("requirements.txt", requirements())]
    if not save_code:
        return files
    program, code_path = env.get("program"), env.get("code_path")
    if program and code_path and os.path.isfile(program):
        with open(program, "rb") as f:
            files.append((f"code/{code_path}", f.read()))
    root = git_root()
    if root is None:
        return files
    diff = _git("diff", "HEAD", "--submodule=diff", cwd=root)
    if diff:
        files.append(("diff.patch", diff))
    upstream = _fork_point(root)
    if upstream:
        diff = _git("diff", upstream, "--submodule=diff", cwd=root)
        if diff:
            files.append((f"diff_{upstream}.patch", diff))
    return files


def _fork_point(root):
    """The commit where the branch left its upstream tracking branch, if it has one."""
    tracking = _git("rev-parse", "--abbrev-ref", "@{upstream}", cwd=root)
    tracking = tracking.decode(errors="replace").strip() if tracking else ""
    if not tracking:
        return None
    base = _git("merge-base", "HEAD", tracking, cwd=root)
    return base.decode().strip() or None if base else None
