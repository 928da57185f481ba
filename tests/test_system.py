"""The machine a run trained on (recorder/system/): environment, job_type, files and system
metrics recorded at init and by the sampler, replayed offline into real wandb and read back
from the .wandb transaction log; a TF1 MonitoredSession run; psutil and NVML failing for
real; and wandb's own offline run of the same program as the yardstick."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import wandb_log
from tfblackbox.cli.main import main as cli_main, replay_main
from tfblackbox.cli.exits import EXIT_OK
from tfblackbox.schema import Store
from tfblackbox.schema.codecs import run_files, system_read

TESTS = os.path.dirname(os.path.abspath(__file__))

# one program, run under wandb (mode offline, stats every second) or under tfblackbox
PROGRAM = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    mode = sys.argv[1]
    if mode == "wandb":
        import wandb
        run = wandb.init(mode="offline", project="sys", job_type="train", save_code=True,
                         settings=wandb.Settings(x_stats_sampling_interval=1.0))
    else:
        from tfblackbox import recorder
        run = recorder.init(store=sys.argv[2], run_id="sys", project="sys", job_type="train",
                            save_code=True, stats_interval=1.0)
    for i in range(4):
        run.log({{"loss": 1.0 / (i + 1)}})
        time.sleep(0.8)
    run.finish()
""")


def child_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_SILENT="true", **extra)
    return env


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd,
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repo with a remote, the program committed and then changed (a diff)."""
    root = tmp_path_factory.mktemp("repo")
    git(root, "init", "-q", ".")
    git(root, "remote", "add", "origin", "https://example.com/team/project.git")
    (root / "prog.py").write_text(PROGRAM.format(tests=TESTS))
    git(root, "add", "prog.py")
    git(root, "commit", "-qm", "init")
    with open(root / "prog.py", "a") as f:
        f.write("# an uncommitted change\n")
    return root


def run_program(repo, *args, env=None):
    out = subprocess.run([sys.executable, "prog.py", *args], cwd=repo, capture_output=True,
                         text=True, timeout=240, env=child_env(**(env or {})))
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def replay(store, wandb_dir):
    assert replay_main(["--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir",
                        str(wandb_dir), "--no-progress"]) == EXIT_OK
    files = wandb_log.run_files(str(wandb_dir))
    assert len(files) == 1
    return files[0]


def records(path):
    return [(r.WhichOneof("record_type"), r) for r in wandb_log.read_records(path)]


def env_fields(recs):
    """The fields set in a file's environment records (their JSON names), merged."""
    from google.protobuf import json_format
    out = {}
    for kind, r in recs:
        if kind == "environment":
            out.update(json_format.MessageToDict(r.environment))
    return out


def stats_keys(recs):
    return [sorted(i.key for i in r.stats.item) for kind, r in recs if kind == "stats"]


def file_paths(recs):
    return sorted(f.path for kind, r in recs if kind == "files" for f in r.files.files)


@pytest.fixture(scope="module")
def recorded(repo, tmp_path_factory):
    store = str(tmp_path_factory.mktemp("rec") / "store")
    run_program(repo, "tfblackbox", store)
    return store


@pytest.fixture(scope="module")
def wandb_own(repo):
    run_program(repo, "wandb")
    files = [f for f in wandb_log.run_files(str(repo / "wandb")) if "latest-run" not in f]
    assert len(files) == 1
    return files[0]


# -- recording --------------------------------------------------------------------------------

def test_init_records_the_environment_files_and_samples(recorded, repo):
    s = Store.open(recorded, clean_orphans=False)
    (attempt, env), = system_read.environments(s, "sys")
    assert attempt == 1
    assert env["program"] == str(repo / "prog.py") and env["code_path"] == "prog.py"
    assert env["root"] == str(repo) and env["args"] == ["tfblackbox", recorded]
    assert env["git"]["remote_url"] == "https://example.com/team/project.git"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()
    assert env["git"]["commit"] == head
    assert env["executable"] == sys.executable and env["python"].endswith(
        sys.version.split()[0])
    import psutil
    assert env["cpu_count_logical"] == psutil.cpu_count()
    assert env["memory"]["total"] == psutil.virtual_memory().total
    assert env["disk"]["/"]["total"] == psutil.disk_usage("/").total
    assert "gpu_count" not in env and "gpu_nvidia" not in env   # no GPU here: absent
    assert system_read.job_type(s, "sys") == "train"
    refs = {ref["path"]: ref for _a, ref in system_read.files(s, "sys")}
    assert sorted(refs) == ["code/prog.py", "diff.patch", "requirements.txt"]
    blobs = run_files.read_blobs(s, [r["sha256"] for r in refs.values()])
    assert blobs[refs["code/prog.py"]["sha256"]] == (repo / "prog.py").read_bytes()
    assert b"+# an uncommitted change" in blobs[refs["diff.patch"]["sha256"]]
    reqs = blobs[refs["requirements.txt"]["sha256"]].decode().splitlines()
    from importlib.metadata import version
    assert f"wandb=={version('wandb')}" in reqs and f"psutil=={version('psutil')}" in reqs
    samples = system_read.samples(s, "sys")
    assert len(samples) >= 3 and samples[-1].reason == "finish"
    assert [x.seq for x in samples] == list(range(len(samples)))
    assert "cpu" not in samples[0].values and "cpu" in samples[1].values   # as wandb's
    for x in samples:
        assert x.values["proc.memory.rssMB"] > 1 and 0 < x.values["memory_percent"] < 100


def test_files_are_stored_once_per_content_across_the_store(tmp_path):
    from tfblackbox import recorder
    store = str(tmp_path / "store")
    for run_id in ("a", "b"):
        recorder.init(store=store, run_id=run_id, stats_interval=0)
        recorder.finish()
    s = Store.open(store, clean_orphans=False)
    shas = [ref["sha256"] for r in ("a", "b") for _a, ref in system_read.files(s, r)]
    assert len(shas) == 2 and shas[0] == shas[1]
    held = [g.run_id for g in s.segments(None, "file_blobs")]
    assert held == ["a"]
    assert not system_read.samples(s, "a")        # stats_interval=0: no samples


def test_show_prints_the_environment(recorded, capsys):
    assert cli_main(["show", "sys", "--store", recorded]) == EXIT_OK
    out = capsys.readouterr().out
    assert "job_type train" in out and "environment (attempt 1): " in out
    assert "file requirements.txt" in out and "system metrics: " in out
    assert cli_main(["show", "sys", "--store", recorded, "--json"]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert info["job_type"] == "train" and info["environments"][0]["host"]
    assert info["system_metrics"]["samples"] >= 3 and "cpu" in info["system_metrics"]["keys"]


# -- replay, and wandb's own run as the yardstick -------------------------------------------

def test_replay_holds_what_wandbs_own_run_holds(recorded, wandb_own, tmp_path):
    path = replay(recorded, tmp_path / "wandb")
    mine, theirs = records(path), records(wandb_own)
    # the same record types (wandb's own has `header` and `final` of its own making too)
    kinds = {k for k, _r in theirs} - {"header", "final"}
    assert kinds <= {k for k, _r in mine}, kinds - {k for k, _r in mine}
    for kind in ("environment", "stats", "files", "run", "history", "exit"):
        assert kind in kinds
    # the same stats keys (this machine's): the first sample has no cpu, later ones have
    assert stats_keys(mine)[0] == stats_keys(theirs)[0]
    assert set(stats_keys(mine)[-1]) == set(stats_keys(theirs)[-1])
    # the same environment fields (values are the machine's and the moment's); tfblackbox
    # adds the OS user name where wandb has the W&B account's, which offline has none
    ours, own = env_fields(mine), env_fields(theirs)
    assert set(own) <= set(ours), set(own) - set(ours)
    assert set(ours) - set(own) <= {"username"}
    for key in ("os", "python", "program", "codePath", "codePathLocal", "root", "host",
                "executable", "git", "cpu_count", "cpu_count_logical", "cpu"):
        assert ours[key] == own[key], key
    assert ours["memory"]["total"] == own["memory"]["total"]
    assert ours["disk"]["/"]["total"] == own["disk"]["/"]["total"]
    assert sum(k == "environment" for k, _r in mine) == sum(k == "environment"
                                                              for k, _r in theirs) == 2
    # the same files, with the same content where it does not depend on the moment
    assert file_paths(mine) == file_paths(theirs) == ["code/prog.py", "diff.patch",
                                                        "requirements.txt"]
    for name in ("code/prog.py", "diff.patch", "requirements.txt"):
        a = open(os.path.join(os.path.dirname(path), "files", name), "rb").read()
        b = open(os.path.join(os.path.dirname(wandb_own), "files", name), "rb").read()
        assert (sorted(a.splitlines()) if name == "requirements.txt" else a) == (
            sorted(b.splitlines()) if name == "requirements.txt" else b), name
    # the run record: job type, the training's host and git
    (_k, run_mine), = [(k, r) for k, r in mine if k == "run"]
    (_k, run_own), = [(k, r) for k, r in theirs if k == "run"]
    assert run_mine.run.job_type == run_own.run.job_type == "train"
    assert run_mine.run.host == run_own.run.host
    assert run_mine.run.git.commit == run_own.run.git.commit
    assert run_mine.run.git.remote_url == run_own.run.git.remote_url


def test_replayed_stats_carry_their_recorded_times(recorded, tmp_path):
    path = replay(recorded, tmp_path / "wandb")
    s = Store.open(recorded, clean_orphans=False)
    samples = system_read.samples(s, "sys")
    stats = [r.stats for k, r in records(path) if k == "stats"]
    assert [st.timestamp.ToNanoseconds() for st in stats] == [
        int(x.wall_time * 1e9) for x in samples]
    for st, x in zip(stats, samples):
        assert {i.key: json.loads(i.value_json) for i in st.item} == pytest.approx(x.values)
    # a second replay has nothing new: no chunk, nothing pushed twice
    assert replay_main(["--store", recorded, "--to", "wandb", "--mode", "offline",
                        "--wandb-dir", str(tmp_path / "wandb"), "--no-progress"]) == EXIT_OK
    assert len(wandb_log.run_files(str(tmp_path / "wandb"))) == 1
