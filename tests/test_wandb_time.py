"""A replayed run's time, read back from real wandb's offline transaction log: it starts at the
training's init, each row's `_runtime` is its wall time on the training's clock, the exit
record's runtime is the recorded duration, and a resumed run's runtime adds up its attempts
as W&B counts them (each resume starts from the whole seconds run so far). Also: rows W&B
could refuse, or gets later than a one-shot replay would give them, are reported in --json."""

import json
import math
import time

import pyarrow as pa
import pytest

import wandb_log
from tfblackbox.cli.exits import EXIT_OK
from tfblackbox.cli.main import replay_main
from tfblackbox.replay.wandb import plan_rows, timeline
from tfblackbox.schema import SCALARS, Store
from tfblackbox.schema.errors import ReplayError
from tfblackbox.schema.store import catalog as cat
from tfblackbox.schema.store.maintenance import compact
from tfblackbox.schema.tables import TENSORS, TFEVENTS_RECORDS


def replay(store, wandb_dir, *extra):
    return replay_main(["--store", store, "--to", "wandb", "--mode", "offline", "--wandb-dir",
                        str(wandb_dir), "--no-progress", *extra])


def scalars(store, run_id, steps, walls, tag="loss", attempt=1):
    store.write_segment(run_id, "scalars", pa.Table.from_pydict(
        {"step": steps, "wall_time": walls, "tag": [tag] * len(steps),
         "attempt": [attempt] * len(steps), "value": [float(s) for s in steps]},
        schema=SCALARS))


def set_times(store, run_id, started, ended, attempts, age=60.0):
    """Sets the run's and its attempts' times ([(start, end)]), and ages its segments."""
    with store.catalog.session(write=True) as s:
        run = s.get(cat.RunRow, run_id)
        run.started_at = started
        if ended is not None:
            run.status, run.exit_code, run.ended_at, run.heartbeat_at = "finished", 0, ended, ended
        for w in s.scalars(cat.select(cat.WriterRow).where(cat.WriterRow.run_id == run_id)):
            w.started_at, w.ended_at = attempts[w.attempt - 1]
        for seg in s.scalars(cat.select(cat.SegmentRow)):
            seg.created_at -= age


def still_running(store, run_id):
    """Marks the run as recording still (a heartbeat far ahead), its segments aged a minute."""
    set_times(store, run_id, 99.0, None, [(99.0, None)])
    with store.catalog.session(write=True) as s:
        s.get(cat.RunRow, run_id).heartbeat_at = 1e12


def replayed(store, wdir, capsys):
    """`replay --json` of the store into wdir: its result for the (one) run."""
    assert replay(store.root, wdir, "--json") == EXIT_OK
    return json.loads(capsys.readouterr().out)["runs"][0]


def records(wdir):
    [path] = wandb_log.run_files(str(wdir))
    return path, list(wandb_log.read_records(path))


def test_a_run_starts_at_its_init_and_each_row_runs_from_there(tmp_path):
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r", project="time")
    store.begin_attempt("r")
    scalars(store, "r", [0, 1, 2], [1003.5, 1010.25, 1020.0])
    set_times(store, "r", 1000.0, 1021.75, [(1000.01, 1021.7)])
    assert replay(store.root, tmp_path / "wandb") == EXIT_OK
    path, recs = records(tmp_path / "wandb")
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    assert run.start_time.ToMicroseconds() == 1000 * 10**6
    hist = wandb_log.history(path)
    assert [(r["_step"], r["_runtime"]) for r in hist] == [(0, 3.5), (1, 10.25), (2, 20.0)]
    [exit_] = [r.exit for r in recs if r.WhichOneof("record_type") == "exit"]
    assert exit_.runtime == 21                       # whole seconds, as wandb-core writes it
    summary = wandb_log.summary(path)
    assert summary["_wandb"]["runtime"] == summary["_runtime"] == 21


def test_a_resumed_run_adds_up_its_attempts_as_wandb_does(tmp_path):
    """Attempt 1 ran 10.7 s, attempt 2 resumed 90 s later and ran 5 s: W&B's runtime is 15 s
    (the resume starts its timer at the whole 10 s so far), not 105 s."""
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r", project="time")
    store.begin_attempt("r")
    store.begin_attempt("r")
    scalars(store, "r", [0], [1005.0], attempt=1)
    scalars(store, "r", [1, 2], [1101.5, 1104.0], attempt=2)
    set_times(store, "r", 1000.0, 1105.0, [(1000.0, 1010.7), (1100.0, 1105.0)])
    assert replay(store.root, tmp_path / "wandb") == EXIT_OK
    path, recs = records(tmp_path / "wandb")
    assert [r["_runtime"] for r in wandb_log.history(path)] == [5.0, 11.5, 14.0]
    assert [r.exit.runtime for r in recs if r.WhichOneof("record_type") == "exit"] == [15]


def test_a_later_chunk_starts_after_the_one_before_it(tmp_path):
    """`wandb sync` uploads a run's chunks in the order of their start times: the first starts
    at the training's init, a later one at its first row."""
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r", project="time")
    store.begin_attempt("r")
    scalars(store, "r", [0, 1], [1001.0, 1002.0])
    set_times(store, "r", 1000.0, None, [(1000.0, None)])
    with store.catalog.session(write=True) as s:   # still recording, alive
        s.get(cat.RunRow, "r").heartbeat_at = 1e12
    wdir = tmp_path / "wandb"
    assert replay(store.root, wdir) == EXIT_OK
    scalars(store, "r", [2, 3], [1003.0, 1004.0])
    set_times(store, "r", 1000.0, 1005.0, [(1000.0, 1005.0)])
    assert replay(store.root, wdir) == EXIT_OK
    starts = sorted(wandb_log.run_record(f).start_time.ToNanoseconds() / 1e9
                    for f in wandb_log.run_files(str(wdir)))
    assert starts == [1000.0, 1003.0]
    rows = sorted((r for f in wandb_log.run_files(str(wdir)) for r in wandb_log.history(f)),
                  key=lambda r: r["_step"])
    assert [r["_runtime"] for r in rows] == [1.0, 2.0, 3.0, 4.0]


def test_the_transaction_log_is_written_back_record_for_record(tmp_path):
    """txlog.encode frames records as wandb's reader (and tests/wandb_log.py) reads them,
    records across block boundaries included."""
    from wandb.proto import wandb_internal_pb2 as pb
    from tfblackbox.replay.wandb import txlog
    recs = []
    for i, size in enumerate([10, 40_000, 32 * 1024 - 14, 5, 100_000, 3]):
        r = pb.Record(num=i)
        r.history.item.add(key="k", value_json=json.dumps("x" * size))
        recs.append(r)
    path = tmp_path / "run-x.wandb"
    path.write_bytes(txlog.encode([r.SerializeToString() for r in recs]))
    assert list(wandb_log.read_records(str(path))) == recs
    assert txlog.read_records(str(path)) == recs


def test_a_row_at_a_step_already_pushed_is_reported_not_dropped_silently(tmp_path, capsys):
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r", project="late")
    store.begin_attempt("r")
    scalars(store, "r", [0, 1, 2, 3], [100.0, 101.0, 102.0, 103.0])
    still_running(store, "r")
    wdir = tmp_path / "wandb"
    first = replayed(store, wdir, capsys)
    assert first["cursor_after"] == 3 and first["refused_rows"]["count"] == 0
    scalars(store, "r", [1], [104.0], tag="backwards")     # log(step=1) after step 3
    scalars(store, "r", [4], [105.0])
    set_times(store, "r", 99.0, 106.0, [(99.0, 106.0)], age=0.0)
    assert replay(store.root, wdir, "--json") == EXIT_OK
    out = capsys.readouterr()
    second = json.loads(out.out)["runs"][0]
    assert second["refused_rows"] == {"count": 1, "tags": ["backwards"]}
    assert "backwards" in out.err
    assert replay(store.root, wdir, "--json") == EXIT_OK   # reported once
    assert json.loads(capsys.readouterr().out)["runs"][0]["refused_rows"]["count"] == 0


def tfevents(store, run_id, file, records):
    """records: [(index, step, wall, tag, what)] of a tfevents file (namespace: its dir)."""
    n = len(records)
    store.write_segment(run_id, "tfevents_records", pa.Table.from_pydict({
        "step": [r[1] for r in records], "wall_time": [r[2] for r in records],
        "tag": [r[3] for r in records], "attempt": [1] * n, "file": [file] * n,
        "source": [f"/logs/{file}"] * n, "offset": [r[0] * 100 for r in records],
        "index": [r[0] for r in records], "what": [r[4] for r in records],
        "length": [10] * n, "crc": [0] * n, "record": [b""] * n, "cuts": [None] * n},
        schema=TFEVENTS_RECORDS))
    summaries = [r for r in records if r[4] == "summary"]
    scalars_at(store, run_id, summaries)


def scalars_at(store, run_id, summaries):
    store.write_segment(run_id, "scalars", pa.Table.from_pydict(
        {"step": [r[1] for r in summaries], "wall_time": [r[2] for r in summaries],
         "tag": [r[3] for r in summaries], "attempt": [1] * len(summaries),
         "value": [float(r[1]) for r in summaries]}, schema=SCALARS))


def test_tfevents_rows_are_rows_of_their_own_and_a_late_one_is_pushed_and_reported(
        tmp_path, capsys):
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r", project="late")
    store.begin_attempt("r")
    scalars(store, "r", [0, 1, 2], [100.0, 101.0, 102.0], tag="batch/loss")
    tfevents(store, "r", "train/events.1", [(0, 0, 99.5, "", "file_version"),
                                            (1, 0, 100.5, "train/epoch_loss", "summary"),
                                            (2, 0, 100.6, "train/epoch_acc", "summary"),
                                            (3, 1, 101.5, "train/epoch_loss", "summary"),
                                            (4, 2, 102.5, "train/epoch_loss", "summary")])
    still_running(store, "r")
    wdir = tmp_path / "wandb"
    first = replayed(store, wdir, capsys)
    rows = [r for f in wandb_log.run_files(str(wdir)) for r in wandb_log.history(f)]
    # in time order: each tfevents step its own row with global_step, after the logged row
    # before it; the file's last group waits (more events of its step may come)
    assert [(r["_step"], r.get("global_step"), sorted(k for k in r if not k.startswith("_")))
            for r in rows] == [
        (0, None, ["batch/loss"]),
        (1, 0, ["global_step", "train/epoch_acc", "train/epoch_loss"]),
        (2, None, ["batch/loss"]),
        (3, 1, ["global_step", "train/epoch_loss"]),
        (4, None, ["batch/loss"])]
    assert rows[1]["_timestamp"] == 100.6 and first["synced_rows"] == 2
    # a second file of the same logdir whose event is older than rows already pushed
    tfevents(store, "r", "train/events.2", [(0, 7, 100.2, "train/other", "summary"),
                                            (1, 8, 103.0, "train/other", "summary")])
    set_times(store, "r", 99.0, 104.0, [(99.0, 104.0)], age=0.0)
    assert replay(store.root, wdir, "--json") == EXIT_OK
    out = capsys.readouterr()
    second = json.loads(out.out)["runs"][0]
    assert second["late_rows"] == {"count": 1, "tags": ["train/other"]}
    assert "train/other" in out.err
    rows = sorted((r for f in wandb_log.run_files(str(wdir)) for r in wandb_log.history(f)),
                  key=lambda r: r["_step"])
    # the logdir's rows in file order, the late one with the next W&B step: nothing lost
    assert [(r["_step"], r.get("global_step")) for r in rows][4:] == [
        (4, None), (5, 2), (6, 7), (7, 8)]
    assert not any(math.isnan(r["_runtime"]) for r in rows)


def test_online_uploads_the_offline_chunk_with_wandb_sync(tmp_path, monkeypatch):
    """Online, the chunk is the offline one (on the training's clock) uploaded by `wandb sync`
    (no network here: the upload is caught, and the command it would run checked)."""
    import shutil
    import subprocess
    import types
    from tfblackbox.replay.wandb import push
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r", project="time")
    store.begin_attempt("r")
    scalars(store, "r", [0, 1], [1002.0, 1004.5])
    set_times(store, "r", 1000.0, 1006.0, [(1000.0, 1006.0)])
    uploaded, real_upload = [], push.upload

    def upload(sync_dir, opts, project):
        uploaded.append((project, opts.entity))
        shutil.copytree(sync_dir, tmp_path / "uploaded")
    monkeypatch.setattr(push, "upload", upload)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert replay_main(["--store", store.root, "--to", "wandb", "--mode", "online",
                        "--entity", "team", "--no-progress"]) == EXIT_OK
    assert uploaded == [("time", "team")]
    assert replay(store.root, tmp_path / "offline") == EXIT_OK
    [online] = wandb_log.run_files(str(tmp_path / "uploaded"))
    [offline] = wandb_log.run_files(str(tmp_path / "offline"))
    assert wandb_log.history(online) == wandb_log.history(offline)
    assert [r["_runtime"] for r in wandb_log.history(online)] == [2.0, 4.5]
    assert wandb_log.run_record(online).start_time.ToMicroseconds() == 1000 * 10**6

    ran = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: ran.append(cmd) or
                        types.SimpleNamespace(returncode=0, stdout="", stderr=""))
    real_upload("/staged/run-dir", types.SimpleNamespace(entity="team"), "time")
    assert ran == [[push.sys.executable, "-m", "wandb", "sync", "--project", "time",
                    "--entity", "team", "/staged/run-dir"]]


def tensor_summary(store, run_id, file, index, step, wall, tag):
    """A tfevents record whose decoded row is a tensor (W&B gets no value from it), as the
    Keras TensorBoard callback's model summary (train/keras)."""
    store.write_segment(run_id, "tfevents_records", pa.Table.from_pydict({
        "step": [step], "wall_time": [wall], "tag": [tag], "attempt": [1], "file": [file],
        "source": [f"/logs/{file}"], "offset": [index * 100], "index": [index],
        "what": ["summary"], "length": [10], "crc": [0], "record": [b""], "cuts": [None]},
        schema=TFEVENTS_RECORDS))
    store.write_segment(run_id, "tensors", pa.Table.from_pylist(
        [{"step": step, "wall_time": wall, "tag": tag, "attempt": 1, "dtype": "string",
          "shape": [], "plugin_name": "text", "tensor": b"model"}], schema=TENSORS))


def test_a_tfevents_row_with_no_wandb_value_is_passed_not_pushed_late(tmp_path, capsys):
    """A live replay whose first chunk holds a tensor-only tfevents group (no W&B value) goes
    on after it: the next chunk neither pushes it nor reports it late (it once did, each time
    the group came first in a chunk)."""
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r", project="late")
    store.begin_attempt("r")
    tfevents(store, "r", "train/events.1", [(0, 0, 99.5, "", "file_version")])
    tensor_summary(store, "r", "train/events.1", 1, 0, 99.6, "train/keras")
    tfevents(store, "r", "train/events.1", [(2, 1, 100.5, "train/loss", "summary")])
    scalars(store, "r", [0], [100.0], tag="batch/loss")
    still_running(store, "r")
    wdir = tmp_path / "wandb"
    first = replayed(store, wdir, capsys)
    assert first["pushed_steps"] == 1 and first["late_rows"]["count"] == 0
    tfevents(store, "r", "train/events.1", [(3, 2, 101.5, "train/loss", "summary")])
    scalars(store, "r", [1], [101.0], tag="batch/loss")
    set_times(store, "r", 99.0, 102.0, [(99.0, 102.0)], age=0.0)
    second = replayed(store, wdir, capsys)
    assert second["late_rows"] == {"count": 0, "tags": []}
    rows = sorted((r for f in wandb_log.run_files(str(wdir)) for r in wandb_log.history(f)),
                  key=lambda r: r["_step"])
    assert [(r["_step"], r.get("global_step"), sorted(k for k in r if not k.startswith("_")))
            for r in rows] == [
        (0, None, ["batch/loss"]), (1, 1, ["global_step", "train/loss"]),
        (2, None, ["batch/loss"]), (3, 2, ["global_step", "train/loss"])]


def live_plan(tmp_path):
    """A live run with two flushes of logged and tfevents rows registered a minute ago, and
    the plan of its first chunk."""
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r", project="race")
    store.begin_attempt("r")
    tfevents(store, "r", "train/events.1", [(0, 0, 99.5, "", "file_version"),
                                            (1, 1, 100.5, "train/loss", "summary")])
    scalars(store, "r", [0], [100.0], tag="batch/loss")
    tfevents(store, "r", "train/events.1", [(2, 2, 101.5, "train/loss", "summary"),
                                            (3, 3, 102.5, "train/loss", "summary")])
    scalars(store, "r", [1, 2], [101.0, 102.0], tag="batch/loss")
    set_times(store, "r", 99.0, None, [(99.0, None)])
    with store.catalog.session(write=True) as s:
        s.get(cat.RunRow, "r").heartbeat_at = time.time()
    plan = timeline.plan_chunk(store, store.run("r"), None, {})
    assert plan.until is not None
    assert [(k, x if k == "log" else x.step) for k, x, _t in plan.slots] == [
        ("log", 0), ("sync", 1), ("log", 1), ("sync", 2), ("log", 2)]
    return store, plan


def test_rows_planned_before_the_finish_compacts_the_run_are_all_pushed(tmp_path):
    """The run's finish compacts its segments, registering the merged files anew: a chunk
    planned just before reads its rows after. Each planned row is still pushed (a live
    --follow replay once pushed the logged rows of such a chunk and left out the tfevents
    rows among them, then pushed those late)."""
    store, plan = live_plan(tmp_path)
    assert compact(store, "r")[("r", "scalars")] == (4, 1)
    got = [(slot, rows.scalars[i]) for slot, rows, i in plan_rows.iter_rows(store, "r", plan)]
    assert [slot for slot, _v in got] == plan.slots
    assert [v for _s, v in got] == [{"batch/loss": 0.0}, {"train/loss": 1.0},
                                    {"batch/loss": 1.0}, {"train/loss": 2.0},
                                    {"batch/loss": 2.0}]


def test_a_group_with_no_stored_row_is_passed_without_reading_past_the_plans_window(tmp_path):
    """A live chunk's tfevents group whose summaries decode to no row is missing from the
    plan's window with no compaction: nothing is read past the window. (It once set off a read
    of every segment, and a flush that had registered a decoded row ahead of its raw record
    then made that row look logged: here, train/acc joined logged step 1's row.)"""
    store = Store.create(str(tmp_path / "store"))
    store.create_run("r", project="race")
    store.begin_attempt("r")
    tfevents(store, "r", "train/events.1", [(0, 0, 99.5, "", "file_version"),
                                            (1, 1, 100.5, "train/loss", "summary")])
    raw = [(2, 2, 101.5, "train/empty", "summary")]     # decodes to no row at all
    tfevents(store, "r", "train/events.1", raw)
    with store.catalog.session(write=True) as s:       # take its decoded rows back out
        last = s.scalars(cat.select(cat.SegmentRow).where(
            cat.SegmentRow.table_name == "scalars").order_by(
            cat.SegmentRow.segment_id.desc())).first()
        s.delete(last)
    tfevents(store, "r", "train/events.1", [(3, 3, 102.5, "train/loss", "summary")])
    scalars(store, "r", [0, 1, 2], [100.0, 101.0, 102.0], tag="batch/loss")
    set_times(store, "r", 99.0, None, [(99.0, None)])
    with store.catalog.session(write=True) as s:
        s.get(cat.RunRow, "r").heartbeat_at = time.time()
    plan = timeline.plan_chunk(store, store.run("r"), None, {})
    assert [(k, x if k == "log" else x.step) for k, x, _t in plan.slots] == [
        ("log", 0), ("sync", 1), ("log", 1), ("sync", 2), ("log", 2)]
    scalars_at(store, "r", [(3, 1, 101.2, "train/acc", "summary")])   # its raw record: later
    got = [(slot, rows.scalars[i] if rows else None)
           for slot, rows, i in plan_rows.iter_rows(store, "r", plan)]
    assert [slot for slot, _v in got] == plan.slots
    assert [v for _s, v in got] == [{"batch/loss": 0.0}, {"train/loss": 1.0},
                                    {"batch/loss": 1.0}, None, {"batch/loss": 2.0}]


def test_planned_rows_gone_from_the_store_fail_the_chunk_naming_them(tmp_path):
    store, plan = live_plan(tmp_path)
    with store.catalog.session(write=True) as s:
        s.execute(cat.delete(cat.SegmentRow).where(cat.SegmentRow.table_name == "scalars"))
    with pytest.raises(ReplayError, match=r"run r: 3 logged step\(s\) .* \(step 0 first\)"):
        list(plan_rows.iter_rows(store, "r", plan))
