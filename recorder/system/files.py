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
    for this venv's ~170 distributions. The headers' first lines are scanned as email's parser
    reads them; what the scan does not vouch for goes to that parser. requirements() then takes
    7 ms of CPU here, most of it reading the files, against 38 ms with the parser for each."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("")
    scanned = _scan_name_version(text)
    if scanned is not None:
        return scanned
    end = _HEADERS_END.search(text)
    headers = email.message_from_string(text if end is None else text[:end.end()])
    return headers["Name"], headers["Version"]


# A line and its ending, as email's feedparser splits them (\r\n, \r or \n); a header line
# as its headerRE takes one (a name of printable ASCII other than ':' and space, then ':').
_LINE = re.compile(r"([^\r\n]*)(?:\r\n|\r|\n|\Z)")
_HEADER = re.compile(r"[\041-\071\073-\176]*:")


def _scan_name_version(text):
    """(Name, Version) read from the header lines up to both, as email.message_from_string
    and compat32's get() give them (the first of each name, case-insensitive, the value with
    leading blanks stripped); None for whatever that parser treats its own way: a folded Name
    or Version, a line that is no header ("From " lines too), or a header missing before
    the headers end."""
    found, pos, folding = {}, 0, False
    while pos < len(text):
        m = _LINE.match(text, pos)
        line, pos = m.group(1), m.end()
        if line[:1] in (" ", "\t"):
            if folding:
                return None
            continue     # a folded line of another header, or a first line email drops
        if len(found) == 2:
            break        # the line after the second is not folding it
        if not line or not _HEADER.match(line):
            return None  # the headers end (or a unix-from) with one of them still missing
        name, _colon, value = line.partition(":")
        key = name.lower()
        folding = key in ("name", "version") and key not in found
        if folding:
            found[key] = value.lstrip(" \t")
    return (found["name"], found["version"]) if len(found) == 2 else None


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
