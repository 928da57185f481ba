"""The command line's contract: bad output paths are clear errors, exit codes as README says,
a closed stdout ends a command quietly."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from tfblackbox.cli.main import main as cli
from tfblackbox.schema import Store


@pytest.fixture
def store_dir(tmp_path):
    path = str(tmp_path / "store")
    s = Store.create(path)
    s.create_run("r1")
    w, a = s.begin_attempt("r1")
    s.write_segment("r1", "scalars", pa.table({
        "step": [0, 1], "wall_time": [1.0, 2.0], "tag": ["x", "x"], "attempt": [a, a],
        "value": [0.5, 1.5]}), w)
    s.finish_run("r1")
    return path


def _bad_outs(tmp_path, small_fs):
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", dangling)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    ro = small_fs("1m")
    subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
    return {"dangling link": (str(dangling), "symbolic link to .*nowhere.*does not exist"),
            "a file": (str(a_file), "exists and is not a directory"),
            "under a file": (str(a_file / "sub"), "cannot write into .*Not a directory"),
            "read-only": (str(ro / "out"), "cannot write into .*Read-only file system")}


@pytest.mark.parametrize("to", ["debug-dump", "wandb"])
def test_every_bad_output_directory_is_a_clear_error(store_dir, tmp_path, small_fs, capsys, to):
    for form, (path, message) in _bad_outs(tmp_path, small_fs).items():
        opt = ["--out", path] if to == "debug-dump" else ["--mode", "offline", "--wandb-dir", path]
        code = cli(["replay", "--store", store_dir, "--to", to, "--no-progress", *opt])
        err = capsys.readouterr().err
        assert code == 2, (form, err)
        assert "Traceback" not in err and path in err, (form, err)
        import re
        assert re.search(message, err), (form, err)


def _damage(store_dir):
    [seg] = Store.open(store_dir).segments("r1")
    os.remove(os.path.join(store_dir, seg.path))


def test_exit_codes_are_as_readme_says(store_dir, tmp_path, capsys):
    """0 success; 1 damage found or a replay that did not complete; 2 bad usage or input."""
    assert cli(["runs", "--store", store_dir]) == 0
    assert cli(["show", "r1", "--store", store_dir]) == 0
    assert cli(["verify", "--store", store_dir]) == 0
    # bad usage and bad input: 2
    assert cli(["no-such-command"]) == 2
    assert cli(["show", "--store", store_dir]) == 2                  # missing RUN
    assert cli(["show", "nope", "--store", store_dir]) == 2          # unknown run
    assert cli(["runs", "--store", str(tmp_path / "missing")]) == 2  # not a store
    assert cli(["replay", "--store", store_dir, "--to", "debug-dump", "--out",
                str(tmp_path / "o"), "--steps", "x:y"]) == 2
    capsys.readouterr()
    # damage found: 1, from every command that meets it
    _damage(store_dir)
    assert cli(["verify", "--store", store_dir]) == 1
    assert cli(["show", "r1", "--store", store_dir]) == 1
    assert cli(["replay", "--store", store_dir, "--to", "wandb", "--mode", "offline",
                "--wandb-dir", str(tmp_path / "w"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "is missing" in err and "tfblackbox verify" in err and "Traceback" not in err


# -- a closed stdout (issue 23, item 2) ------------------------------------------------------

CLOSED_EARLY = [["runs"], ["show", "r1"], ["show", "r1", "--json"],
                ["replay", "--to", "wandb", "--mode", "offline", "--dry-run", "--no-progress"]]


def _into_closed_pipe(argv, command="main"):
    """The CLI with stdout a pipe whose reader is already gone: its first write fails."""
    r, w = os.pipe()
    os.close(r)
    code = f"import sys; from tfblackbox.cli.main import {command}; sys.exit({command}())"
    try:
        return subprocess.run([sys.executable, "-c", code, *argv], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)


@pytest.mark.parametrize("argv", CLOSED_EARLY, ids=" ".join)
def test_a_closed_stdout_ends_a_command_quietly_with_141(store_dir, argv):
    """No traceback and no "Exception ignored" line: the exit status a shell shows for a
    program SIGPIPE ended (128 + 13), as `git log | head` gives."""
    done = _into_closed_pipe(argv + ["--store", store_dir])
    assert (done.returncode, done.stderr) == (141, "")


def test_the_replay_script_and_a_real_head_end_quietly_too(store_dir, tmp_path):
    done = _into_closed_pipe(["--store", store_dir, "--to", "wandb", "--mode", "offline",
                              "--dry-run", "--json"], command="replay_main")
    assert (done.returncode, done.stderr) == (141, "")
    # `show --json | head -1` on a run whose description is far more than a pipe holds
    s = Store.open(store_dir, access="write")
    w, a = s.begin_attempt("r1")
    n = 3000
    s.write_segment("r1", "scalars", pa.table({
        "step": [0] * n, "wall_time": [1.0] * n, "tag": [f"tag/{i:04d}" for i in range(n)],
        "attempt": [a] * n, "value": [0.0] * n}), w)
    cmd = f"{sys.executable} -m tfblackbox.cli.main show r1 --json --store {store_dir}"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd} | head -1"],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (141, "{\n", "")
    full = subprocess.run(cmd.split(), capture_output=True, text=True, timeout=120)
    assert len(full.stdout) > 256 << 10 and len(json.loads(full.stdout)["tables"]["scalars"][
        "tags"]) == n   # (attempt 2 from step 0 on: r1's first tag is superseded)
