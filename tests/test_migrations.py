"""Store format upgrades (alembic): a format-1 store as tfblackbox 0.1 wrote it, opened by a
writer, is upgraded in place after a backup; attempt numbers are unique even for concurrent
starts; stores of formats 2, 3 and 4 upgrade to the current format (4: the triggers table; 5:
the losses table); the catalog the revisions build is the one a new store gets from the
models."""

import glob
import hashlib
import os
import sqlite3
import subprocess
import sys

import pyarrow as pa
import pytest

from tfblackbox.schema import FORMAT_VERSION, Store, verify
from tfblackbox.schema.store import segments
from tfblackbox.schema.store.migrate import REVISIONS

from catalog_helpers import catalog_layout, newest_format_sqlite, upgrade_empty_catalog
from file_trees import files_under

V1_SQL = os.path.join(os.path.dirname(__file__), "data", "catalog_v1.sql")


def _segment(root, run_id, table_name, table, writer_id, con):
    _t, data = segments.encode(table, table_name)
    rel = f"data/{table_name}/run_id={run_id}/w{writer_id}-old.parquet"
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    with open(os.path.join(root, rel), "wb") as f:
        f.write(data)
    con.execute("INSERT INTO segments (run_id, table_name, writer_id, path, row_count, "
                "size_bytes, sha256, min_step, max_step, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, table_name, writer_id, rel, table.num_rows, len(data),
                 hashlib.sha256(data).hexdigest(), min(table["step"].to_pylist()),
                 max(table["step"].to_pylist()), 1.0))
    return rel


def make_format1_store(root):
    """A store as 0.1 left it: its catalog DDL, two writers that got the same attempt number
    (the race of format 1), a tensors segment with "DT_FLOAT"-style dtypes."""
    os.makedirs(os.path.join(root, "data"))
    con = sqlite3.connect(os.path.join(root, "catalog.sqlite"))
    con.executescript(open(V1_SQL).read())
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("format_version", "1"),
                                                       ("created_by", "0.1.0")])
    con.execute("INSERT INTO runs (run_id, status, config_json, tags_json, started_at) VALUES "
                "('r', 'finished', '{}', '[]', 1.0)")
    for wid, attempt, first in ((1, 1, 0), (2, 2, 5), (3, 2, 7)):
        con.execute("INSERT INTO writers (writer_id, run_id, attempt, started_at, first_step, "
                    "dropped_rows) VALUES (?, 'r', ?, 1.0, ?, 0)", (wid, attempt, first))
    scalars = pa.table({"step": list(range(10)), "wall_time": [1.0] * 10, "tag": ["x"] * 10,
                        "attempt": [1] * 5 + [2] * 5, "value": [float(i) for i in range(10)]})
    _segment(root, "r", "scalars", scalars, 1, con)
    tensors = pa.table({"step": [3, 4], "wall_time": [1.0, 1.0], "tag": ["t", "u"],
                        "attempt": [1, 1], "dtype": ["DT_FLOAT", "DT_STRING_REF"],
                        "shape": [[2], []], "plugin_name": ["", ""],
                        "plugin_content": [None, None], "tensor": [b"a", b"b"]})
    old = _segment(root, "r", "tensors", tensors, 1, con)
    con.commit()
    con.close()
    return old


def test_a_format1_store_is_upgraded_in_place_with_a_backup(tmp_path):
    root = str(tmp_path / "store")
    old_tensors = make_format1_store(root)
    s = Store.open(root, access="write")    # a writer upgrades (readers refuse)
    con = sqlite3.connect(os.path.join(root, "catalog.sqlite"))
    found, newest = newest_format_sqlite(con)
    assert found == newest
    attempts = [(w.writer_id, w.attempt, w.first_step) for w in s.writers("r")]
    assert attempts == [(1, 1, 0), (2, 2, 5), (3, 3, None)]
    assert "renumbered from 2" in s.writers("r")[2].error
    with pytest.raises(sqlite3.IntegrityError):
        con.execute("INSERT INTO writers (run_id, attempt, started_at, dropped_rows) "
                    "VALUES ('r', 1, 1.0, 0)")
    # readers see what format 1 showed: attempt 2's rows from step 5 on cut attempt 1 there
    assert s.scalars("r")["step"].to_pylist() == list(range(10))
    assert s.tensors("r")["dtype"].to_pylist() == ["float32", "string_ref"]
    assert not os.path.exists(os.path.join(root, old_tensors))
    assert verify(s).ok
    assert_triggers_table(con)
    assert_losses_table(con)
    con.rollback()     # the refused INSERT left this connection's transaction open
    s.note_losses("r", 3, {("scalars", "finish"): (4, 160, 8, 9)})    # the renumbered attempt
    assert [(x.attempt, x.table, x.rows) for x in s.losses("r")] == [(3, "scalars", 4)]
    [backup] = glob.glob(os.path.join(root, "catalog.sqlite.format1-backup-*"))
    old = sqlite3.connect(backup)
    assert old.execute("SELECT value FROM meta WHERE key='format_version'").fetchone() == ("1",)
    Store.open(root, access="write")    # opening again changes nothing
    assert len(glob.glob(os.path.join(root, "catalog.sqlite.format1-backup-*"))) == 1


def test_a_new_store_is_at_the_newest_revision(tmp_path):
    Store.create(str(tmp_path / "s"))
    con = sqlite3.connect(str(tmp_path / "s" / "catalog.sqlite"))
    assert con.execute("SELECT version_num FROM alembic_version").fetchone() == (
        REVISIONS[FORMAT_VERSION],)
    assert con.execute("SELECT value FROM meta WHERE key='format_version'").fetchone() == (
        str(FORMAT_VERSION),)
    assert_triggers_table(con)
    assert_losses_table(con)
    assert not glob.glob(str(tmp_path / "s" / "*backup*"))


def assert_triggers_table(con):
    """The format-4 triggers table with its run_id index, in a SQLite catalog."""
    cols = [(r[1], r[2], r[3]) for r in con.execute("PRAGMA table_info(triggers)")]
    assert cols == [("trigger_id", "INTEGER", 1), ("run_id", "VARCHAR(64)", 1),
                    ("writer_id", "INTEGER", 0), ("step", "INTEGER", 0),
                    ("kind", "VARCHAR(32)", 1), ("reason", "TEXT", 1), ("fired_at", "FLOAT", 1),
                    ("first_step", "INTEGER", 0), ("last_step", "INTEGER", 0),
                    ("steps_written", "INTEGER", 1)]
    assert [r[1:3] for r in con.execute("PRAGMA index_list(triggers)")] == [
        ("ix_triggers_run_id", 0)]
    assert sorted(r[2:5] for r in con.execute("PRAGMA foreign_key_list(triggers)")) == [
        ("runs", "run_id", "run_id"), ("writers", "writer_id", "writer_id")]


def assert_losses_table(con):
    """The format-5 losses table: its columns, run_id index, one row per (attempt, table,
    reason), in a SQLite catalog."""
    cols = [(r[1], r[2], r[3]) for r in con.execute("PRAGMA table_info(losses)")]
    assert cols == [("loss_id", "INTEGER", 1), ("run_id", "VARCHAR(64)", 1),
                    ("writer_id", "INTEGER", 1), ("table_name", "VARCHAR(64)", 1),
                    ("reason", "VARCHAR(16)", 1), ("rows", "BIGINT", 1), ("bytes", "BIGINT", 1),
                    ("first_step", "BIGINT", 0), ("last_step", "BIGINT", 0),
                    ("updated_at", "FLOAT", 1)]
    assert sorted(r[1:3] for r in con.execute("PRAGMA index_list(losses)")) == [
        ("ix_losses_run_id", 0), ("sqlite_autoindex_losses_1", 1)]
    assert sorted(r[2:5] for r in con.execute("PRAGMA foreign_key_list(losses)")) == [
        ("runs", "run_id", "run_id"), ("writers", "writer_id", "writer_id")]


def test_the_revisions_build_the_catalog_the_models_do(tmp_path):
    """An old store upgraded through every revision has exactly the tables, columns, indexes
    and constraints of a new store (made from the models and stamped)."""
    Store.create(str(tmp_path / "new"))
    upgrade_empty_catalog(f"sqlite:///{tmp_path / 'migrated.sqlite'}")
    new = catalog_layout(f"sqlite:///{tmp_path / 'new' / 'catalog.sqlite'}")
    migrated = catalog_layout(f"sqlite:///{tmp_path / 'migrated.sqlite'}")
    assert {"triggers", "losses"} <= set(new) and set(new) == set(migrated)
    for table in new:
        assert new[table] == migrated[table], table


FORMAT3 = os.path.join(os.path.dirname(__file__), "data", "store_format3")


def test_a_format3_store_upgrades_and_takes_triggers(tmp_path, capsys):
    """tests/data/store_format3 was recorded by the format-3 code (recorder.init twice into
    run 'format3': steps 0-4, then 3-7 resumed; a replay cursor). Opened, it is at the
    current format with everything it held, a backup of its format-3 catalog beside it, and
    takes triggers (format 4)."""
    import shutil

    from tfblackbox.cli.main import main as cli
    root = str(tmp_path / "store")
    shutil.copytree(FORMAT3, root)
    con = sqlite3.connect(os.path.join(root, "catalog.sqlite"))
    assert con.execute("SELECT value FROM meta WHERE key='format_version'").fetchone() == ("3",)
    assert not con.execute("SELECT name FROM sqlite_master WHERE name='triggers'").fetchall()
    con.close()
    s = Store.open(root, access="write")    # a writer upgrades (readers refuse)
    con = sqlite3.connect(os.path.join(root, "catalog.sqlite"))
    found, newest = newest_format_sqlite(con)
    assert found == newest
    assert_triggers_table(con)
    assert_losses_table(con)
    [backup] = glob.glob(os.path.join(root, "catalog.sqlite.format3-backup-*"))
    assert sqlite3.connect(backup).execute(
        "SELECT value FROM meta WHERE key='format_version'").fetchone() == ("3",)
    # what format 3 held, unchanged
    assert [(w.writer_id, w.attempt, w.first_step) for w in s.writers("format3")] == [
        (1, 1, 0), (2, 2, 3)]
    t = s.scalars("format3")
    assert t["step"].to_pylist() == list(range(8))
    assert t["attempt"].to_pylist() == [1, 1, 1, 2, 2, 2, 2, 2]
    assert s.get_cursor("format3", "wandb:offline") == (7, {"note": "pushed"})
    assert s.run("format3").status == "finished" and verify(s).ok
    assert s.triggers("format3") == []
    trigger_id = s.record_trigger("format3", 2, "spike", "loss 9.5 > 5 x its mean", step=7,
                                  fired_at=1234.5, first_step=3, last_step=7, steps_written=5)
    [got] = Store.open(root).triggers("format3")     # opening again upgrades nothing
    assert (got.trigger_id, got.writer_id, got.kind, got.step, got.steps_written) == (
        trigger_id, 2, "spike", 7, 5)
    assert len(glob.glob(os.path.join(root, "catalog.sqlite.format*-backup-*"))) == 1
    assert cli(["show", "format3", "--store", root]) == 0
    assert "trigger spike at step 7 (attempt 2)" in capsys.readouterr().out


FORMAT4 = os.path.join(os.path.dirname(__file__), "data", "store_format4")


def test_a_format4_store_upgrades_to_format5_and_takes_losses(tmp_path, capsys):
    """tests/data/store_format4 was recorded by the format-4 code (recorder.init twice into
    run 'format4': steps 0-4, then 3-7 resumed; attempt 1 noted with 3 dropped jobs and an
    error, a nan trigger on attempt 2, a replay cursor). Opened, it is at format 5 with
    everything it held, a backup of its format-4 catalog beside it, and takes losses."""
    import shutil

    from tfblackbox.cli.main import main as cli
    root = str(tmp_path / "store")
    shutil.copytree(FORMAT4, root)
    con = sqlite3.connect(os.path.join(root, "catalog.sqlite"))
    assert con.execute("SELECT value FROM meta WHERE key='format_version'").fetchone() == ("4",)
    assert not con.execute("SELECT name FROM sqlite_master WHERE name='losses'").fetchall()
    con.close()
    s = Store.open(root, access="write")    # a writer upgrades (readers refuse)
    con = sqlite3.connect(os.path.join(root, "catalog.sqlite"))
    found, newest = newest_format_sqlite(con)
    assert found == newest
    assert_triggers_table(con)
    assert_losses_table(con)
    [backup] = glob.glob(os.path.join(root, "catalog.sqlite.format4-backup-*"))
    assert sqlite3.connect(backup).execute(
        "SELECT value FROM meta WHERE key='format_version'").fetchone() == ("4",)
    # what format 4 held, unchanged
    assert [(w.writer_id, w.attempt, w.first_step, w.dropped_rows, w.error)
            for w in s.writers("format4")] == [(1, 1, 0, 3, "disk full (format-4 note)"),
                                               (2, 2, 3, 0, None)]
    t = s.scalars("format4")
    assert t["step"].to_pylist() == list(range(8))
    assert t["attempt"].to_pylist() == [1, 1, 1, 2, 2, 2, 2, 2]
    assert s.get_cursor("format4", "wandb:offline") == (7, {"note": "pushed"})
    assert [(x.kind, x.step, x.writer_id) for x in s.triggers("format4")] == [("nan", 7, 2)]
    assert s.run("format4").status == "finished" and verify(s).ok
    assert s.losses("format4") == []
    s.note_losses("format4", 1, {("tfdbg_v1_tensors", "memory"): (900, 5 << 20, 10, 95),
                                 ("scalars", "finish"): (21, 840, 96, 96)})
    s.note_losses("format4", 1, {("tfdbg_v1_tensors", "memory"): (1000, 6 << 20, 10, 100)})
    got = Store.open(root).losses("format4")      # opening again upgrades nothing
    assert [(x.attempt, x.table, x.reason, x.rows, x.bytes, x.first_step, x.last_step)
            for x in got] == [(1, "scalars", "finish", 21, 840, 96, 96),
                              (1, "tfdbg_v1_tensors", "memory", 1000, 6 << 20, 10, 100)]
    assert len(glob.glob(os.path.join(root, "catalog.sqlite.format*-backup-*"))) == 1
    assert cli(["show", "format4", "--store", root]) == 0
    out = capsys.readouterr().out
    assert "trigger nan at step 7 (attempt 2)" in out
    assert "lost 1000 tfdbg_v1_tensors rows" in out


CHILD = """
import sys, time
from tfblackbox import recorder
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
run = recorder.init(store=sys.argv[1], run_id="same", resume="allow")
print(run.attempt)
recorder.finish()
"""


def test_processes_starting_one_run_at_once_get_unique_attempts(tmp_path):
    import time
    root = str(tmp_path / "s")
    Store.create(root)
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, root, str(start)],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert sorted(int(o.split()[-1]) for o in outs) == [1, 2, 3, 4]
    assert sorted(w.attempt for w in Store.open(root).writers("same")) == [1, 2, 3, 4]


FORMAT2 = os.path.join(os.path.dirname(__file__), "data", "store_format2")


def _rebuilt_sums(root):
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files_under(root).items()}


def test_a_format2_store_with_dumps_upgrades_and_rebuilds_byte_for_byte(tmp_path):
    """tests/data/store_format2 was recorded by DumpHook with the format-2 code (3 dumped
    steps of tests/test_dumps.py's graph), next to the sha256 of every file its replay
    rebuilt then. Upgraded (to format 3, then on to the current one) it rebuilds the same
    files; dumps imported into the same run afterwards (encoded, format 3) and compacted with
    the old rows read back too."""
    import json
    import shutil

    from tfblackbox.cli.main import main as cli
    from tfblackbox.schema.tables.tfdbg_v1 import TFDBG_V1_TENSORS
    root = str(tmp_path / "store")
    shutil.copytree(FORMAT2, root)
    with open(os.path.join(os.path.dirname(__file__), "data",
                           "store_format2_rebuilt.json")) as f:
        expected = json.load(f)
    s = Store.open(root, access="write")    # a writer upgrades (readers refuse)
    con = sqlite3.connect(os.path.join(root, "catalog.sqlite"))
    found, newest = newest_format_sqlite(con)
    assert found == newest
    assert_triggers_table(con)
    assert_losses_table(con)
    assert glob.glob(os.path.join(root, "catalog.sqlite.format2-backup-*"))
    assert verify(s).ok
    [seg] = s.segments("format2", "tfdbg_v1_tensors")
    import pyarrow.parquet as pq
    old = pq.read_table(os.path.join(root, seg.path))
    assert old.schema.names == TFDBG_V1_TENSORS.names and old["codec"].null_count == old.num_rows
    out = tmp_path / "out"
    assert cli(["replay", "--store", root, "--to", "debug-dump", "--out", str(out)]) == 0
    assert _rebuilt_sums(str(out)) == expected
    # format-3 rows beside the old ones in one run, merged into one segment by compaction
    assert cli(["import-dumps", str(out), "--store", root, "--run", "format2"]) == 0
    new = s.read("format2", "tfdbg_v1_tensors", columns=["attempt", "codec"], latest_only=False)
    assert new.num_rows == 2 * old.num_rows
    assert new.filter(pa.compute.equal(new["attempt"], 2))["codec"].null_count < old.num_rows
    from tfblackbox.schema import compact
    compact(s, "format2")
    assert len(s.segments("format2", "tfdbg_v1_tensors")) == 1 and verify(s).ok
    both = tmp_path / "both"
    assert cli(["replay", "--store", root, "--to", "debug-dump", "--out", str(both)]) == 0
    # imported run dirs keep their names: the second attempt's rows supersede the first's
    # from its first step on (all steps), and rebuild the same files
    assert _rebuilt_sums(str(both)) == expected
