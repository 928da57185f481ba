"""The Python snippets of README.md and docs/*.md that are marked runnable (a line
`<!-- runnable -->` right before the ```python fence) run as they are written, each in a fresh
process in an empty folder, so the documentation cannot drift from the code."""

import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "<!-- runnable -->"
FENCE = re.compile(r"^" + re.escape(MARK) + r"\s*\n```python\n(.*?)^```", re.M | re.S)


def _snippets():
    pages = [os.path.join(ROOT, "README.md")]
    pages += sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    found = []
    for page in pages:
        with open(page, encoding="utf-8") as f:
            text = f.read()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 2
            found.append(pytest.param(m.group(1), id=f"{os.path.relpath(page, ROOT)}:{line}"))
    return found


SNIPPETS = _snippets()


def test_the_documentation_has_runnable_snippets():
    assert len(SNIPPETS) >= 3, "README.md and docs/ should mark their main snippets runnable"


@pytest.mark.parametrize("code", SNIPPETS)
def test_snippet_runs(code, tmp_path):
    env = dict(os.environ, TFBLACKBOX_STORE=str(tmp_path / "store"), WANDB_MODE="offline",
               WANDB_SILENT="true", TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
