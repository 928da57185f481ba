"""Readers change nothing (issue 25, item 4): `runs`, `show`, every replay and `report` open a
store read-only. After each, every file of the store is byte for byte what it was (the catalog
too; a replay's one write is its cursor row), orphan files included; a store of an older format
is refused, naming `tfblackbox upgrade`, which upgrades it and keeps the old catalog. SQLite:
no -journal, -wal or -shm appears; PostgreSQL: the reader's session is READ ONLY."""

import glob
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pyarrow as pa
import pytest

from tfblackbox.cli.main import main as cli
from tfblackbox.schema import (FORMAT_VERSION, CatalogError, ReadOnlyStoreError, Store,
                               StoreVersionError, compact)
from tfblackbox.schema.store import segments

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FORMAT3 = os.path.join(DATA, "store_format3")    # one run 'format3', scalars, a cursor
FORMAT2 = os.path.join(DATA, "store_format2")    # one run 'format2', tfdbg v1 dumps

# each reader command; {out} is a fresh directory outside the store, {run} a run of it
READERS = {
    "runs": ["runs"],
    "runs --json": ["runs", "--json"],
    "show": ["show", "{run}"],
    "show --json": ["show", "{run}", "--json"],
    "replay wandb --dry-run": ["replay", "--to", "wandb", "--mode", "offline", "--dry-run",
                               "--wandb-dir", "{out}/wandb", "--no-progress"],
    "replay wandb": ["replay", "--to", "wandb", "--mode", "offline", "--wandb-dir",
                     "{out}/wandb", "--no-progress"],
    "replay tensorboard": ["replay", "--to", "tensorboard", "--out", "{out}/tb"],
    "replay debug-dump": ["replay", "--to", "debug-dump", "--out", "{out}/dumps"],
    "report": ["report", "--out", "{out}/report.html"],
}
WRITES_A_CURSOR = {"replay wandb", "replay tensorboard"}


def hashes(root):
    """{path under root: sha256} of every file: the catalog, backups, data, orphans."""
    out = {}
    for folder, _dirs, names in os.walk(root):
        for n in names:
            with open(os.path.join(folder, n), "rb") as f:
                out[os.path.relpath(os.path.join(folder, n), root)] = hashlib.sha256(
                    f.read()).hexdigest()
    return out


def catalog_rows(root):
    """{table: sorted rows} of a SQLite catalog, read as the test's own reader."""
    con = sqlite3.connect(f"file:{os.path.join(root, 'catalog.sqlite')}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables}
    finally:
        con.close()


def add_orphans(root, run_id):
    """What a writer killed between a segment's write and its registration leaves: its temp
    file and a renamed file no catalog row names (this host, a dead pid, an hour old)."""
    folder = os.path.join(root, "data", "scalars", f"run_id={run_id}")
    os.makedirs(folder, exist_ok=True)
    host = segments.file_name("x").split("-")[1]
    paths = [os.path.join(folder, f".1-{host}-999999-000001-abcdef.parquet.tmp"),
             os.path.join(folder, f"1-{host}-999999-000002-abcdef.parquet")]
    for p in paths:
        with open(p, "wb") as f:
            f.write(b"half a segment")
        os.utime(p, (1, 1))
    return paths


@pytest.fixture(scope="module")
def current(tmp_path_factory):
    """A store at this format: tests/data/store_format2 upgraded (its run 'format2' holds
    dumps), a run 'alpha' with scalars, and two orphan files."""
    root = str(tmp_path_factory.mktemp("current") / "store")
    shutil.copytree(FORMAT2, root)
    assert cli(["upgrade", "--store", root]) == 0
    s = Store.open(root, access="write")
    s.create_run("alpha", project="p")
    w, a = s.begin_attempt("alpha")
    s.write_segment("alpha", "scalars", pa.table({
        "step": list(range(5)), "wall_time": [1000.0 + i for i in range(5)],
        "tag": ["loss"] * 5, "attempt": [a] * 5, "value": [0.5 * i for i in range(5)]}), w)
    s.end_attempt(w)
    s.finish_run("alpha")
    s.close()
    add_orphans(root, "alpha")
    return root


def run_cli(name, root, out, run):
    os.makedirs(out, exist_ok=True)
    args = [a.format(out=out, run=run) for a in READERS[name]]
    return cli(args + ["--store", root])


@pytest.mark.parametrize("name", list(READERS))
def test_a_reader_changes_no_file_of_the_store(name, current, tmp_path, capsys):
    root = str(tmp_path / "store")
    shutil.copytree(current, root)
    before, rows = hashes(root), catalog_rows(root)
    run = "format2" if name == "replay debug-dump" else "alpha"
    assert run_cli(name, root, str(tmp_path / "out"), run) == 0, capsys.readouterr().err
    after = hashes(root)
    assert set(after) == set(before)           # nothing created (no -journal), nothing deleted
    if name not in WRITES_A_CURSOR:
        assert after == before
        return
    # a replay's one write: its cursor row; every other file and catalog row as it was
    assert {k: v for k, v in after.items() if k != "catalog.sqlite"} == {
        k: v for k, v in before.items() if k != "catalog.sqlite"}
    now = catalog_rows(root)
    assert {t: r for t, r in now.items() if t != "cursors"} == {
        t: r for t, r in rows.items() if t != "cursors"}
    assert len(now["cursors"]) > len(rows["cursors"])


@pytest.mark.parametrize("name", list(READERS))
def test_a_reader_refuses_an_older_store_naming_the_upgrade(name, tmp_path, capsys):
    root = str(tmp_path / "store")
    shutil.copytree(FORMAT3, root)
    add_orphans(root, "format3")
    before = hashes(root)
    assert run_cli(name, root, str(tmp_path / "out"), "format3") == 2
    err = capsys.readouterr().err
    assert "format version 3" in err and f"`tfblackbox upgrade --store {root}`" in err, err
    assert "Traceback" not in err
    assert hashes(root) == before


def test_upgrade_upgrades_keeps_the_backup_and_is_idempotent(tmp_path, capsys):
    root = str(tmp_path / "store")
    shutil.copytree(FORMAT3, root)
    orphans = add_orphans(root, "format3")
    before = hashes(root)
    assert cli(["upgrade", "--store", root, "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["store"], done["format_before"], done["format_after"], done["upgraded"]) == (
        root, 3, FORMAT_VERSION, True)
    [backup] = glob.glob(os.path.join(root, "catalog.sqlite.format3-backup-*"))
    assert done["backup"] == backup
    after = hashes(root)
    assert after[os.path.relpath(backup, root)] == before["catalog.sqlite"]   # the old catalog
    assert {k: v for k, v in after.items() if not k.startswith("catalog.sqlite")} == {
        k: v for k, v in before.items() if k != "catalog.sqlite"}   # data, orphans: untouched
    assert all(os.path.exists(p) for p in orphans)
    assert catalog_rows(root)["meta"] != catalog_rows(FORMAT3)["meta"]
    # again: nothing to do, nothing changed
    assert cli(["upgrade", "--store", root]) == 0
    assert "nothing to upgrade" in capsys.readouterr().out
    assert hashes(root) == after
    assert cli(["show", "format3", "--store", root]) == 0
    assert hashes(root) == after


def test_a_writer_still_upgrades_and_removes_orphans(tmp_path):
    """The orphans above are real: a writer's open (recorder.init, import-*, compact) removes
    them and upgrades the store, keeping the backup, as Store.open did for every caller."""
    root = str(tmp_path / "store")
    shutil.copytree(FORMAT3, root)
    orphans = add_orphans(root, "format3")
    s = Store.open(root, access="write")
    assert not any(os.path.exists(p) for p in orphans)
    assert len(glob.glob(os.path.join(root, "catalog.sqlite.format3-backup-*"))) == 1
    assert s.scalars("format3")["step"].to_pylist() == list(range(8))


def test_a_reader_cannot_write_and_sqlite_itself_refuses(current, tmp_path):
    root = str(tmp_path / "store")
    shutil.copytree(current, root)
    before = hashes(root)
    s = Store.open(root)
    table = pa.table({"step": [9], "wall_time": [1.0], "tag": ["x"], "attempt": [1],
                      "value": [1.0]})
    for write in (lambda: s.create_run("new"), lambda: s.set_cursor("alpha", "x", 1),
                  lambda: s.write_segment("alpha", "scalars", table), lambda: compact(s),
                  lambda: s.record_trigger("alpha", None, "nan", "x"), s.keep_reserve):
        with pytest.raises(ReadOnlyStoreError, match="opened to read"):
            write()
    from sqlalchemy import text
    with pytest.raises(CatalogError, match="readonly database"):   # mode=ro: SQLite refuses
        with s.catalog.session() as session:
            session.execute(text("INSERT INTO meta VALUES ('x', 'y')"))
    # a replay writes its cursor, and nothing else
    r = Store.open(root, access="replay")
    r.set_cursor("alpha", "wandb:/p", 4, {"n": 1})
    assert Store.open(root).get_cursor("alpha", "wandb:/p") == (4, {"n": 1})
    with pytest.raises(ReadOnlyStoreError):
        r.create_run("new")
    r.close()
    after = hashes(root)
    assert set(after) == set(before) and {k for k in after if after[k] != before[k]} == {
        "catalog.sqlite"}


# -- SQLite: journals, WAL ----------------------------------------------------------------------

def test_a_wal_catalog_is_refused_without_creating_wal_or_shm(tmp_path, capsys):
    """tfblackbox 0.1 kept its catalog in WAL mode; `mode=ro` alone would create -wal and -shm
    next to it. Without a log it is read `immutable`; with one it is refused as it stands."""
    from test_migrations import make_format1_store
    root = str(tmp_path / "store")
    make_format1_store(root)
    con = sqlite3.connect(os.path.join(root, "catalog.sqlite"))
    assert con.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    con.close()
    before = hashes(root)
    assert sorted(before) == ["catalog.sqlite", "data/scalars/run_id=r/w1-old.parquet",
                              "data/tensors/run_id=r/w1-old.parquet"]
    assert cli(["runs", "--store", root]) == 2
    assert "format version 1" in capsys.readouterr().err
    assert hashes(root) == before
    # a log not yet written back (its writer killed): refused, still nothing created
    code = ("import os, sqlite3, sys\ncon = sqlite3.connect(sys.argv[1])\n"
            "con.execute(\"INSERT INTO meta VALUES ('note', 'x')\")\ncon.commit()\nos._exit(9)")
    subprocess.run([sys.executable, "-c", code, os.path.join(root, "catalog.sqlite")])
    assert os.path.getsize(os.path.join(root, "catalog.sqlite-wal")) > 0
    before = hashes(root)
    assert cli(["show", "r", "--store", root]) == 2
    err = capsys.readouterr().err
    assert "WAL mode" in err and f"tfblackbox upgrade --store {root}" in err
    assert hashes(root) == before
    assert cli(["upgrade", "--store", root]) == 0      # the log is written back first
    assert "upgraded from format 1" in capsys.readouterr().out
    assert not glob.glob(os.path.join(root, "catalog.sqlite-*"))
    assert cli(["show", "r", "--store", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["run_id"] == "r"


def test_a_hot_journal_of_a_killed_writer_is_rolled_back_before_reading(current, tmp_path,
                                                                         capsys):
    """A writer killed inside a catalog transaction leaves a hot journal; SQLite must roll it
    back before the file can be read, which a `mode=ro` connection cannot. The reader lets an
    ordinary connection do it: the catalog is its last commit again, and it reads."""
    root = str(tmp_path / "store")
    shutil.copytree(current, root)
    rows = catalog_rows(root)
    code = ("import os, sqlite3, sys\ncon = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "con.execute('PRAGMA cache_size=1')\ncon.execute('BEGIN IMMEDIATE')\n"
            "for i in range(3000):\n"
            "    con.execute('INSERT INTO meta VALUES (?, ?)', (f'k{i}', 'x' * 200))\n"
            "os._exit(9)")
    subprocess.run([sys.executable, "-c", code, os.path.join(root, "catalog.sqlite")])
    assert os.path.getsize(os.path.join(root, "catalog.sqlite-journal")) > 0
    assert cli(["runs", "--store", root, "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["format2", "alpha"]
    assert not os.path.exists(os.path.join(root, "catalog.sqlite-journal"))
    assert catalog_rows(root) == rows


# -- PostgreSQL --------------------------------------------------------------------------------

def test_a_reader_of_an_older_postgresql_catalog_is_refused(postgres, pg_url, tmp_path, capsys):
    from catalog_helpers import upgrade_empty_catalog
    from test_postgres import FORMAT3_ROWS
    from tfblackbox.schema.store.catalog import display_url
    data = str(tmp_path / "d")
    os.makedirs(os.path.join(data, "data"))
    orphans = add_orphans(data, "r")
    upgrade_empty_catalog(pg_url, "0003")
    db = pg_url.rsplit("/", 1)[1]
    for statement in FORMAT3_ROWS.format(data=data).strip().split(";\n"):
        postgres.sql(statement, db)

    def dump():
        tables = sorted(r[0] for r in postgres.sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db))
        return {t: sorted(map(repr, postgres.sql(f'SELECT * FROM "{t}"', db))) for t in tables}
    before, files = dump(), hashes(data)
    for name in ("runs", "show", "replay wandb --dry-run", "replay wandb", "report"):
        assert run_cli(name, pg_url, str(tmp_path / "out"), "r") == 2, name
        err = capsys.readouterr().err
        assert f"`tfblackbox upgrade --store {display_url(pg_url)}`" in err, err
    with pytest.raises(StoreVersionError, match="tfblackbox upgrade"):
        Store.open(pg_url)
    assert dump() == before and hashes(data) == files and all(map(os.path.exists, orphans))
    assert cli(["upgrade", "--store", pg_url, "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["format_before"], done["format_after"], done["backup"]) == (
        3, FORMAT_VERSION, None)
    assert cli(["runs", "--store", pg_url]) == 0
    # the server keeps a reader from writing: its session is READ ONLY
    from sqlalchemy import text
    reader = Store.open(pg_url)
    with pytest.raises(CatalogError, match="read-only transaction"):
        with reader.catalog.session() as session:
            session.execute(text("INSERT INTO meta VALUES ('x', 'y')"))
    replay = Store.open(pg_url, access="replay")       # a replay writes its cursor only
    replay.set_cursor("r", "wandb:/p", 9)
    assert reader.get_cursor("r", "wandb:/p") == (9, {})
    with pytest.raises(ReadOnlyStoreError):
        replay.create_run("other")
    reader.close()
    replay.close()
