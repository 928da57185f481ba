"""The catalog side of issue 23: the rows an attempt recorded but could not store are counted
in a `losses` row per (attempt, table, reason) (format 5), shown by `tfblackbox show` (text
and --json) under their attempt, and carried along by `tfblackbox merge`."""

import json

import pytest

from tfblackbox.cli.main import main as cli
from tfblackbox.schema import LossRecord, Store


def run_with_attempts(store, run_id, attempts=2, host="h"):
    store.create_run(run_id, project="p", host=host)
    return [store.begin_attempt(run_id, host, 100 + i)[0] for i in range(attempts)]


def test_totals_are_recorded_per_attempt_table_and_reason(tmp_path):
    s = Store.create(str(tmp_path / "s"))
    w1, w2 = run_with_attempts(s, "r")
    assert s.losses("r") == []
    s.note_losses("r", w2, {("tfdbg_v1_tensors", "memory"): (100, 4 << 20, 10, 50)})
    s.note_losses("r", w1, {("scalars", "finish"): (21, 900, 7, 7),
                            ("tfdbg_v1_tensors", "memory"): (3, 300, 1, 2)})
    s.note_losses("r", w2, {("tfdbg_v1_tensors", "memory"): (250, 9 << 20, 10, 95),
                            ("tfdbg_v1_runs", "memory"): (25, 9000, 10, 95)})
    s.note_losses("r", w2, {("tfdbg_v1_tensors", "memory"): (250, 9 << 20, 10, 95)})   # again
    got = s.losses("r")
    assert all(isinstance(x, LossRecord) for x in got)
    assert [(x.attempt, x.table, x.reason, x.rows, x.bytes, x.first_step, x.last_step)
            for x in got] == [
        (1, "scalars", "finish", 21, 900, 7, 7), (1, "tfdbg_v1_tensors", "memory", 3, 300, 1, 2),
        (2, "tfdbg_v1_runs", "memory", 25, 9000, 10, 95),
        (2, "tfdbg_v1_tensors", "memory", 250, 9 << 20, 10, 95)]
    with pytest.raises(ValueError, match="loss reason 'sometimes'"):
        s.note_losses("r", w1, {("scalars", "sometimes"): (1, 1, None, None)})


def test_show_lists_losses_under_their_attempt(tmp_path, capsys):
    root = str(tmp_path / "s")
    s = Store.create(root)
    w1, w2 = run_with_attempts(s, "r")
    s.note_losses("r", w1, {("tfdbg_v1_tensors", "memory"): (271000, 75 << 20, 30, 455),
                            ("scalars", "finish"): (42, 1680, None, None)})
    assert cli(["show", "r", "--store", root]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    first, second = (next(i for i, ln in enumerate(lines) if ln.startswith(f"  attempt {n}:"))
                     for n in (1, 2))
    assert lines[first + 1:second] == [
        "    lost 42 scalars rows (1.6 KiB): still unwritten when the attempt ended",
        "    lost 271000 tfdbg_v1_tensors rows (75.0 MiB, steps 30..455): dropped past "
        "max_unwritten_bytes while the store could not take them"]
    assert cli(["show", "r", "--store", root, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["losses"]
    assert [(x["attempt"], x["writer_id"], x["table"], x["reason"], x["rows"], x["bytes"],
             x["first_step"], x["last_step"]) for x in shown] == [
        (1, w1, "scalars", "finish", 42, 1680, None, None),
        (1, w1, "tfdbg_v1_tensors", "memory", 271000, 75 << 20, 30, 455)]
    s.create_run("quiet")
    assert cli(["show", "quiet", "--store", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["losses"] == []


def test_merge_carries_losses_with_writer_ids_remapped(tmp_path, capsys):
    a = Store.create(str(tmp_path / "a"))
    run_with_attempts(a, "first", attempts=1, host="ha")           # takes dest writer id 1
    b = Store.create(str(tmp_path / "b"))
    b1, b2 = run_with_attempts(b, "r", host="hb")
    b.note_losses("r", b2, {("media", "memory"): (8, 8 << 20, 3, 9)})
    dst = str(tmp_path / "dst")
    assert cli(["merge", a.root, b.root, "--into", dst, "--json"]) == 0
    assert [r["losses_copied"] for r in json.loads(capsys.readouterr().out)["sources"]] == [
        0, 1]
    d = Store.open(dst)
    assert [(x.attempt, x.table, x.rows) for x in d.losses("r")] == [(2, "media", 8)]
    assert d.losses("r")[0].writer_id == d.writers("r")[1].writer_id != b2   # remapped
    b.note_losses("r", b2, {("media", "memory"): (10, 10 << 20, 3, 12)})   # it lost more
    assert cli(["merge", b.root, "--into", dst, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"][0]["losses_copied"] == 1
    assert cli(["merge", b.root, "--into", dst, "--json"]) == 0                 # nothing new
    assert json.loads(capsys.readouterr().out)["sources"][0]["losses_copied"] == 0
    assert [(x.attempt, x.rows, x.bytes, x.last_step) for x in d.losses("r")] == [
        (2, 10, 10 << 20, 12)]
