"""Multi-worker runs: under TF_CONFIG each task records `<run>-<type><index>` in group `<run>`
with the same init call, the chief's run first; two real MultiWorkerMirroredStrategy workers
(TF2, child processes on 127.0.0.1 ports) record into one PostgreSQL-backed store and replay
to W&B as one group."""

import json
import os
import subprocess
import sys

import pytest

import wandb_log
from servers import free_port
from tfblackbox.cli.main import main as cli, replay_main
from tfblackbox.cli.exits import EXIT_OK
from tfblackbox.schema import BlackboxError, Store

TESTS = os.path.dirname(os.path.abspath(__file__))
CLUSTER = {"chief": ["10.0.0.1:2222"], "worker": ["10.0.0.2:2222", "10.0.0.3:2222"],
           "ps": ["10.0.0.4:2222"]}


def task_init(monkeypatch, store, kind, index, cluster=CLUSTER, **kw):
    from tfblackbox import recorder
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": kind, "index": index}}))
    run = recorder.init(store=store, project="p", name="exp", **kw)
    recorder.finish()
    return run


def test_each_task_records_its_own_run_of_one_group_chief_first(monkeypatch, store_dir,
                                                                 capsys):
    from tfblackbox import recorder
    w1 = task_init(monkeypatch, store_dir, "worker", 1)
    monkeypatch.delenv("TF_CONFIG")
    recorder.init(store=store_dir, run_id="solo")
    recorder.finish()
    chief = task_init(monkeypatch, store_dir, "chief", 0)
    w0 = task_init(monkeypatch, store_dir, "worker", 0)
    ps = task_init(monkeypatch, store_dir, "ps", 0)
    job = w1.record.group
    assert job.startswith("job-") and {chief.record.group, w0.record.group, ps.record.group} == {
        job}
    assert [r.run_id for r in Store.open(store_dir).runs()] == [
        f"{job}-chief0", f"{job}-worker0", f"{job}-worker1", f"{job}-ps0", "solo"]
    assert chief.record.name == "exp-chief0"
    assert cli(["runs", "--store", store_dir]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["RUN", "PROJECT", "NAME", "GROUP"]
    assert [line.split()[0] for line in lines[1:]] == [
        f"{job}-chief0", f"{job}-worker0", f"{job}-worker1", f"{job}-ps0", "solo"]
    # a restarted task (same TF_CONFIG) continues its run as a new attempt
    again = task_init(monkeypatch, store_dir, "worker", 1)
    assert (again.run_id, again.attempt) == (w1.run_id, 2)
    # another cluster is another job; a given run_id names the job
    other = task_init(monkeypatch, store_dir, "worker", 0, cluster={"worker": ["h:1", "h:2"]})
    assert other.record.group not in (job, None)
    named = task_init(monkeypatch, store_dir, "worker", 0, run_id="nightly", group=None)
    assert (named.run_id, named.record.group) == ("nightly-worker0", "nightly")


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "TF_CONFIG is not JSON"),
    (json.dumps({"cluster": CLUSTER, "task": {"type": "boss", "index": 0}}), "type 'boss'"),
    (json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": -1}}), "index -1"),
])
def test_a_bad_tf_config_is_named(monkeypatch, store_dir, tf_config, message):
    from tfblackbox import recorder
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(BlackboxError, match=message):
        recorder.init(store=store_dir)


def test_two_mwms_workers_record_one_group_replayed_as_a_wandb_group(pg_url, tmp_path):
    ports = f"{free_port()},{free_port()}"
    env = dict(os.environ, MW_DATA=str(tmp_path / "data"))
    procs = [subprocess.Popen([sys.executable, os.path.join(TESTS, "multiworker_script.py"),
                               ports, str(i), pg_url, str(tmp_path / "logs")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _out, err in outs]
    store = Store.open(pg_url)
    runs = store.runs()
    job = runs[0].group
    assert [r.run_id for r in runs] == [f"{job}-worker0", f"{job}-worker1"]
    assert [(r.group, r.name, r.status, r.project) for r in runs] == [
        (job, "mwms-worker0", "finished", "mw"), (job, "mwms-worker1", "finished", "mw")]
    for i, r in enumerate(runs):
        t = store.scalars(r.run_id)
        by_tag = {tag: [v for v, g in zip(t["value"].to_pylist(), t["tag"].to_pylist())
                        if g == tag] for tag in set(t["tag"].to_pylist())}
        assert by_tag == {"allreduced": [3.0] * 5, "worker_index": [float(i)] * 5}, by_tag
    wdir = tmp_path / "wandb"
    assert replay_main(["--store", pg_url, "--to", "wandb", "--mode", "offline",
                        "--wandb-dir", str(wdir), "--no-progress"]) == EXIT_OK
    records = [wandb_log.run_record(f) for f in wandb_log.run_files(str(wdir))]
    assert sorted((r.run_id, r.run_group, r.display_name) for r in records) == [
        (f"{job}-worker0", job, "mwms-worker0"), (f"{job}-worker1", job, "mwms-worker1")]
