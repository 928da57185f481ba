"""The compiled decoder as a user gets it: `pip wheel .` of the source (every file git tracks)
builds a wheel that holds the extension and loads it; on a machine with no C compiler the
same command still gives a wheel, without it, and the package from that wheel decodes in pure
Python after a one-line notice. Built with this venv's setuptools (no build isolation: no
download)."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTENSION = "tfblackbox/schema/formats/_native."


def _source(tmp_path):
    files = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True,
                           check=True).stdout.decode().split("\0")
    src = tmp_path / "src"
    for name in filter(None, files):
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(ROOT, name), dest)
    return src


def _wheel(tmp_path, **env):
    if subprocess.run(["git", "-C", ROOT, "rev-parse"], capture_output=True).returncode:
        pytest.skip("not a git checkout: the source files are the ones git tracks")
    out = tmp_path / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(out), f"{_source(tmp_path)}{os.sep}"],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = out.glob("tfblackbox-*.whl")
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(unpacked)
        return z.namelist(), unpacked


_PROBE = """
import logging, sys
logging.basicConfig(format="NOTICE %(message)s", stream=sys.stdout)
from tfblackbox.schema.formats import native, tfrecord
path = sys.argv[1] + "/records"
tfrecord.write_records(path, [b"a", b"bc"])
got = [tfrecord.read_records(path) for _ in range(3)]
assert got == [[(0, b"a"), (17, b"bc")]] * 3, got
print("MODULE", native.module() and native.module().__file__)
"""


def _probe(unpacked):
    """The unpacked wheel's package (ahead of the editable install on sys.path) reading a
    TFRecord file: its stdout lines."""
    env = {k: v for k, v in os.environ.items() if k != "TFBLACKBOX_PURE_PYTHON"}
    done = subprocess.run([sys.executable, "-c", _PROBE, str(unpacked)], capture_output=True,
                          text=True, env={**env, "PYTHONPATH": str(unpacked)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_pip_wheel_holds_the_extension_and_it_loads(tmp_path):
    names, unpacked = _wheel(tmp_path)
    lines = _probe(unpacked)
    (so,) = [n for n in names if n.startswith(EXTENSION) and n.endswith(".so")]
    assert lines == [f"MODULE {unpacked}/{so}"]
    # DumpHook's capture is compiled on first use from these: a wheel without one cannot
    from tfblackbox.recorder.tf1 import native_capture
    for source in native_capture.SOURCES + native_capture.HEADERS:
        assert f"tfblackbox/recorder/tf1/native/{os.path.basename(source)}" in names


def test_without_a_compiler_the_wheel_is_built_without_it_and_decodes_in_pure_python(
        tmp_path):
    names, unpacked = _wheel(tmp_path, CC=str(tmp_path / "no-such-compiler"))
    assert not [n for n in names if n.startswith(EXTENSION) and n.endswith(".so")], names
    assert "tfblackbox/schema/formats/native.py" in names
    lines = _probe(unpacked)
    assert lines[-1] == "MODULE None"
    notices = [line for line in lines if line.startswith("NOTICE")]
    assert len(notices) == 1 and "compiled decoder" in notices[0] and "not built" in notices[0]
