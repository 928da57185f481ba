"""The machine a run trained on (recorder/system/): environment, job_type, files and system
metrics recorded at init and by the sampler, replayed offline into real wandb and read back
from the .wandb transaction log; a TF1 MonitoredSession run; psutil and NVML failing for
real; and wandb's own offline run of the same program as the yardstick."""

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import wandb_log
from helpers import child_env
from tfblackbox.cli.main import main as cli_main, replay_main
from tfblackbox.cli.exits import EXIT_OK
from tfblackbox.schema import Store
from tfblackbox.schema.codecs import run_files, system_read
from helpers import missing

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


# -- a TF1 MonitoredSession run, with a black-box trigger ------------------------------------

TF1 = textwrap.dedent("""
    import os, sys, time
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    from tfblackbox import recorder
    tf.compat.v1.disable_eager_execution()
    recorder.init(store=sys.argv[1], run_id="tf1", project="sys", stats_interval=0.3)
    step = tf.compat.v1.train.get_or_create_global_step()
    x = tf.Variable(1.0)
    tf.compat.v1.summary.scalar("loss", x * x)
    train_op = tf.group(tf.compat.v1.assign_add(step, 1), tf.compat.v1.assign_sub(x, 0.01))
    hooks = [recorder.SummaryHook(steps_per_log=1),
             recorder.DumpHook(keep_last=1, capture="files",
                               persist_on=[lambda s, values: s == 5])]
    with tf.compat.v1.train.MonitoredSession(hooks=hooks) as sess:
        for _ in range(12):
            sess.run(train_op)
            time.sleep(0.1)
    recorder.finish()
""")


def test_tf1_monitored_session_run_gets_environment_stats_and_requirements(tmp_path):
    script, store = tmp_path / "tf1.py", str(tmp_path / "store")
    script.write_text(TF1)
    out = subprocess.run([sys.executable, str(script), store], capture_output=True, text=True,
                         timeout=300, env=child_env())
    assert out.returncode == 0, out.stderr[-3000:]
    s = Store.open(store, clean_orphans=False)
    (_a, env), = system_read.environments(s, "tf1")
    assert env["program"] == str(script) and env["cpu_count_logical"] >= 1
    assert [ref["path"] for _a, ref in system_read.files(s, "tf1")] == ["requirements.txt"]
    samples = system_read.samples(s, "tf1")
    reasons = [x.reason for x in samples]
    assert reasons.count("interval") >= 2 and reasons[-1] == "finish"
    assert "trigger callable at step 5" in reasons      # the machine's state at the trigger
    (trigger,) = s.triggers("tf1")
    at = samples[reasons.index("trigger callable at step 5")]
    assert trigger.fired_at <= at.wall_time and at.values["proc.memory.rssMB"] > 1
    path = replay(store, tmp_path / "wandb")
    recs = records(path)
    kinds = [k for k, _r in recs]
    assert kinds.count("environment") == 2 and kinds.count("stats") == len(samples)
    assert file_paths(recs) == ["requirements.txt"]
    fields = env_fields(recs)
    assert fields["program"] == str(script) and fields["cpu_count_logical"] >= 1
    assert len(wandb_log.history(path)) == 12


# -- failures: psutil and NVML failing for real -----------------------------------------------

PLAIN = textwrap.dedent("""
    import logging, sys, time
    logging.basicConfig(level=logging.WARNING)
    from tfblackbox import recorder
    run = recorder.init(store=sys.argv[1], run_id="plain", stats_interval=0.2)
    for i in range(40):
        run.log({"i": i})
        time.sleep(0.1)
    recorder.finish()
    print("trained", run.system.samples)
""")


def run_plain(tmp_path, env):
    script, store = tmp_path / "plain.py", str(tmp_path / "store")
    script.write_text(PLAIN)
    out = subprocess.run([sys.executable, str(script), store], capture_output=True, text=True,
                         timeout=120, env=child_env(**env))
    assert out.returncode == 0 and "trained" in out.stdout, out.stderr[-3000:]
    s = Store.open(store, clean_orphans=False)
    assert s.read("plain", "scalars")["value"].to_pylist() == [float(i) for i in range(40)]
    return out, s


def test_psutil_failing_stops_sampling_once_and_training_goes_on(tmp_path):
    # the sampler watches a process that exits a second after the run began: psutil raises
    # NoSuchProcess mid-run
    catalog = tmp_path / "store" / "catalog.sqlite"
    child = subprocess.Popen([sys.executable, "-c", f"import os, time\nwhile not os.path."
                              f"exists({str(catalog)!r}): time.sleep(0.02)\ntime.sleep(1)"])
    threading.Thread(target=child.wait, daemon=True).start()   # reaped at once: no zombie
    try:
        out, s = run_plain(tmp_path, {"TFBLACKBOX_STATS_PID": str(child.pid)})
    finally:
        child.wait()
    assert out.stderr.count("system metrics stop") == 1, out.stderr
    assert "NoSuchProcess" in out.stderr
    samples = system_read.samples(s, "plain")
    assert samples and all(x.reason == "interval" for x in samples)   # none after, no finish
    assert system_read.environments(s, "plain")   # the environment is kept


def test_probed_is_set_when_the_probe_ends_recorded_or_failed(tmp_path, monkeypatch):
    """`run.system.probed` (what tools/bench_hooks waits for before its clock) is set once the
    environment is recorded, and also when the probe failed (the training never waits on a
    probe that raised)."""
    from tfblackbox import recorder
    from tfblackbox.recorder.system import facts
    run = recorder.init(store=str(tmp_path / "ok"), name="ok")
    assert run.system.probed.wait(60)
    recorder.finish()
    assert system_read.environments(Store.open(str(tmp_path / "ok")), run.run_id)

    def broken(*_a):
        raise RuntimeError("probe broke")
    monkeypatch.setattr(facts, "process_facts", broken)
    run = recorder.init(store=str(tmp_path / "broken"), name="broken")
    assert run.system.probed.wait(60)
    recorder.finish()
    assert not system_read.environments(Store.open(str(tmp_path / "broken")), run.run_id)


def test_no_nvidia_driver_means_no_gpu_keys_and_no_error(tmp_path):
    out, s = run_plain(tmp_path, {})
    assert "GPU" not in out.stderr and "NVML" not in out.stderr, out.stderr
    (_a, env), = system_read.environments(s, "plain")
    assert not any(k.startswith(("gpu", "cuda")) for k in env)
    assert not any(k.startswith("gpu.") for x in system_read.samples(s, "plain")
                   for k in x.values)


@pytest.fixture
def stub_nvml(tmp_path):
    import importlib.util
    if importlib.util.find_spec("pynvml") is None:
        missing("NVIDIA's NVML bindings", "pip install nvidia-ml-py (the test extra has it)")
    cc = os.environ.get("CC", "cc")
    lib = tmp_path / "nvml" / "libnvidia-ml.so.1"
    lib.parent.mkdir()
    try:
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib),
                        os.path.join(TESTS, "data", "nvml_stub.c")], check=True,
                       capture_output=True, timeout=120)
    except (OSError, subprocess.CalledProcessError) as e:
        missing("a C compiler to build the NVML stand-in", str(e))
    return str(lib.parent)


def test_nvml_gpu_keys_then_nvml_failing_stops_gpu_sampling_once(tmp_path, stub_nvml):
    out, s = run_plain(tmp_path, {"LD_LIBRARY_PATH": stub_nvml, "STUB_NVML_READS": "3"})
    (_a, env), = system_read.environments(s, "plain")
    assert env["gpu_count"] == 1 and env["gpu_type"] == "Stub GPU"
    assert env["gpu_nvidia"] == [{"name": "Stub GPU", "memory_total": 16 << 30}]
    assert env["cuda_version"] == "12.2" and env["nvidia_driver_version"] == "535.1"
    samples = system_read.samples(s, "plain")
    with_gpu = [x for x in samples if "gpu.0.gpu" in x.values]
    assert len(with_gpu) == 3 and with_gpu[0].values["gpu.0.memoryAllocated"] == 25.0
    assert samples.index(with_gpu[-1]) == 2 and len(samples) > 4   # the rest goes on
    assert out.stderr.count("GPU metrics stop") == 1 and "GPU is lost" in out.stderr
    assert "system metrics stop" not in out.stderr
    path = replay(str(tmp_path / "store"), tmp_path / "wandb")
    fields = env_fields(records(path))
    assert fields["gpu_nvidia"] == [{"name": "Stub GPU", "memoryTotal": str(16 << 30)}]
    assert fields["gpu"] == "Stub GPU" and fields["gpu_count"] == 1


def test_no_nvml_library_no_pynvml_import(stub_nvml):
    """Without NVIDIA's library the bindings are not even imported (13-30 ms of every run's
    start); with the library where dlopen finds it, they are, and see the GPU."""
    code = ("import sys; from tfblackbox.recorder.system.nvml import open_nvml; n = open_nvml(); "
            "print(n is not None and n.count, 'pynvml' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        pytest.skip("this machine has NVIDIA's NVML library")
    except OSError:
        pass
    plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=120)
    assert plain.stdout.split() == ["False", "False"], plain.stderr
    stubbed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**env, "LD_LIBRARY_PATH": stub_nvml}, timeout=120)
    assert stubbed.stdout.split() == ["1", "True"], stubbed.stderr


def test_tensorboard_gets_system_scalars(recorded, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "tb"
    assert replay_main(["--store", recorded, "--to", "tensorboard", "--out", str(out)]) == EXIT_OK
    s = Store.open(recorded, clean_orphans=False)
    samples = system_read.samples(s, "sys")
    (run_dir,) = [d for d in os.listdir(out) if os.path.isdir(out / d)]
    acc = EventAccumulator(str(out / run_dir / "system"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "system/memory_percent" in tags and "system/cpu" in tags
    points = acc.Scalars("system/proc.memory.rssMB")
    assert [p.step for p in points] == list(range(len(samples)))
    assert [p.wall_time for p in points] == pytest.approx([x.wall_time for x in samples])
    assert [p.value for p in points] == pytest.approx(
        [x.values["proc.memory.rssMB"] for x in samples], rel=1e-6)
    # a second replay writes nothing new
    assert replay_main(["--store", recorded, "--to", "tensorboard", "--out", str(out)]) == EXIT_OK
    assert len(os.listdir(out / run_dir / "system")) == 1


def test_report_has_a_system_section(recorded, tmp_path):
    out = tmp_path / "report.html"
    assert cli_main(["report", "--store", recorded, "--out", str(out)]) == EXIT_OK
    page = out.read_text()
    system = page[page.index("<h2>System</h2>"):]
    assert "<table class=system-metrics>" in system and "proc.memory.rssMB" in system
    assert "requirements.txt" in system and "attempt 1: " in system
    n = len(system_read.samples(Store.open(recorded, clean_orphans=False), "sys"))
    assert f"<tr><td>memory_percent</td><td>{n}</td>" in system
