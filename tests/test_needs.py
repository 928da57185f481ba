"""What a test needs and cannot have: outside CI it is skipped with the reason, under CI it
fails (tests/helpers.missing, used by the server, browser and privilege fixtures)."""

import os
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))

CASE = '''
from helpers import missing

def test_needs_a_server():
    missing("a made-up server", "not installed on purpose")
'''


def _run(tmp_path, ci):
    (tmp_path / "test_case.py").write_text(CASE)
    env = dict(os.environ, PYTHONPATH=TESTS)
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider",
                           str(tmp_path / "test_case.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_outside_ci_a_missing_need_skips_with_its_reason(tmp_path):
    p = _run(tmp_path, ci=False)
    assert p.returncode == 0, p.stdout
    assert "1 skipped" in p.stdout
    assert "a made-up server is not available here: not installed on purpose" in p.stdout


def test_under_ci_a_missing_need_fails(tmp_path):
    p = _run(tmp_path, ci=True)
    assert p.returncode == 1, p.stdout
    assert "1 failed" in p.stdout
    assert "CI must run every test" in p.stdout
