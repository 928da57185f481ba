"""A store whose catalog is a real PostgreSQL server (started by the tests, tests/servers.py):
creation, reading by URL alone, the CLI, credentials kept out of records and output, alembic
migrations (from formats 1, 3 and 4 to the current one), and transactions retried while the
server is away."""

import hashlib
import json
import os
import threading
import time

import pyarrow as pa
import pytest

from tfblackbox.cli.main import main as cli
from tfblackbox.schema import FORMAT_VERSION, NotAStoreError, Store, verify
from tfblackbox.schema.store import segments
from tfblackbox.schema.store.catalog import Catalog, display_url
from tfblackbox.schema.store.migrate import REVISIONS

from catalog_helpers import catalog_layout, newest_format_postgres, upgrade_empty_catalog
from helpers import scalars


def with_password(url, secret="s3cr3t-pw"):
    return url.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{secret}@")


def test_a_store_at_a_url_keeps_data_where_told_and_opens_by_url_alone(postgres, pg_url,
                                                                        tmp_path):
    data = str(tmp_path / "parquet")
    store = Store.create(pg_url, data=data)
    store.create_run("r1", project="p", group="g")
    w, a = store.begin_attempt("r1", "host", 1)
    seg = store.write_segment("r1", "scalars", scalars([0, 1, 2], a), w)
    assert os.path.isfile(os.path.join(data, seg.path))
    again = Store.open(pg_url)                       # the catalog says where the data is
    assert again.data.uri == data and again.root == pg_url.replace("postgres@", "")
    assert again.scalars("r1")["value"].to_pylist() == [0.0, 1.0, 2.0]
    assert verify(again).ok
    db = pg_url.rsplit("/", 1)[1]
    assert postgres.sql("SELECT version_num FROM alembic_version", db) == [
        (REVISIONS[FORMAT_VERSION],)]
    assert postgres.sql("SELECT value FROM meta WHERE key = 'data_uri'", db) == [(data,)]
    assert Store.create(pg_url).data.uri == data      # create on an existing store opens it
    with pytest.raises(NotAStoreError, match="keeps its data at"):
        Store.create(pg_url, data=str(tmp_path / "elsewhere"))


def test_a_new_store_at_a_url_needs_a_data_location_and_an_empty_database(postgres, pg_url):
    with pytest.raises(NotAStoreError, match="needs a data location"):
        Store.create(pg_url)
    with pytest.raises(NotAStoreError, match="not a tfblackbox store"):
        Store.open(pg_url)
    db = pg_url.rsplit("/", 1)[1]
    postgres.sql("CREATE TABLE customers (id int)", db)
    with pytest.raises(NotAStoreError, match="customers"):
        Store.create(pg_url, data="/tmp/x")
    t0 = time.monotonic()
    with pytest.raises(NotAStoreError, match="does not exist"):   # not retried: it never will
        Store.open(postgres.url("no_such_database"))
    assert time.monotonic() - t0 < 10


def test_recording_by_url_and_the_cli_never_show_the_password(postgres, pg_url, tmp_path,
                                                               capsys):
    from tfblackbox import recorder
    url = with_password(pg_url)
    run = recorder.init(store=url, data=str(tmp_path / "d"), project="p", run_id="r")
    for step in range(100):
        run.submit(lambda b, s=step: b.add_scalar(s, 1.0 + s, "loss", s / 10))
    recorder.finish()
    for argv in (["runs"], ["show", "r"], ["verify"], ["compact"], ["runs", "--json"]):
        assert cli(argv + ["--store", url]) == 0, argv
    out = capsys.readouterr()
    assert "r " in out.out and "s3cr3t-pw" not in out.out + out.err
    assert "postgres@" not in out.out + out.err and "postgres:" not in out.out + out.err
    db = pg_url.rsplit("/", 1)[1]
    dumped = json.dumps(postgres.sql("SELECT * FROM meta", db) +
                        postgres.sql("SELECT * FROM runs", db), default=str)
    assert "s3cr3t-pw" not in dumped
    store = Store.open(url)
    assert "s3cr3t-pw" not in store.root + repr(store.data)
    assert store.scalars("r")["step"].to_pylist() == list(range(100))
    # a failing catalog names itself without the password either
    bad = Catalog(with_password(postgres.url("no_such_database")), retry_secs=0)
    with pytest.raises(Exception) as err:
        bad.table_names()
    assert "s3cr3t-pw" not in str(err.value) and "no_such_database" in str(err.value)
    assert display_url("postgresql+psycopg://u:pw@h:5/db?sslpassword=zz&sslmode=require") == (
        "postgresql+psycopg://h:5/db?sslmode=require")


FORMAT1_ROWS = """
INSERT INTO meta VALUES ('format_version', '1'), ('created_by', '0.1.0'), ('data_uri', '{data}');
INSERT INTO runs (run_id, status, config_json, tags_json, started_at)
    VALUES ('r', 'finished', '{{}}', '[]', 1.0);
INSERT INTO writers (writer_id, run_id, attempt, started_at, first_step, dropped_rows)
    VALUES (1, 'r', 1, 1.0, 0, 0), (2, 'r', 2, 1.0, 5, 0), (3, 'r', 2, 1.0, 7, 0);
SELECT setval('writers_writer_id_seq', 3);
"""


def test_migrations_run_on_postgresql(postgres, pg_url, tmp_path):
    """A catalog at format 1 (revision 0001's DDL, run by alembic on PostgreSQL) with the
    format-1 race (two writers with one attempt number) and a tensors segment with old dtype
    names: opening it upgrades it to the current format in one transaction."""
    from alembic import command
    from alembic.config import Config
    from tfblackbox.schema.store import migrate
    data = str(tmp_path / "d")
    catalog = Catalog(pg_url)
    cfg = Config()
    cfg.set_main_option("script_location", migrate.SCRIPTS)
    with catalog.engine.connect() as conn:
        cfg.attributes.update(connection=conn, prepared={}, files=None)
        command.upgrade(cfg, "0001")
        conn.commit()
    db = pg_url.rsplit("/", 1)[1]
    for statement in FORMAT1_ROWS.format(data=data).strip().split(";\n"):
        postgres.sql(statement, db)
    tensors = pa.table({"step": [3, 4], "wall_time": [1.0, 1.0], "tag": ["t", "u"],
                        "attempt": [1, 1], "dtype": ["DT_FLOAT", "DT_STRING_REF"],
                        "shape": [[2], []], "plugin_name": ["", ""],
                        "plugin_content": [None, None], "tensor": [b"a", b"b"]})
    _t, blob = segments.encode(tensors, "tensors")
    rel = "data/tensors/run_id=r/w1-old.parquet"
    os.makedirs(os.path.dirname(os.path.join(data, rel)))
    with open(os.path.join(data, rel), "wb") as f:
        f.write(blob)
    postgres.sql(f"INSERT INTO segments (run_id, table_name, writer_id, path, row_count, "
                 f"size_bytes, sha256, min_step, max_step, created_at) VALUES ('r', 'tensors', "
                 f"1, '{rel}', 2, {len(blob)}, '{hashlib.sha256(blob).hexdigest()}', 3, 4, 1.0)",
                 db)
    catalog.dispose()

    store = Store.open(pg_url, access="write")      # a writer upgrades (readers refuse)
    found, newest = newest_format_postgres(postgres, db)
    assert found == newest
    assert [(w.writer_id, w.attempt, w.first_step) for w in store.writers("r")] == [
        (1, 1, 0), (2, 2, 5), (3, 3, None)]
    assert store.tensors("r")["dtype"].to_pylist() == ["float32", "string_ref"]
    assert not os.path.exists(os.path.join(data, rel))     # the old file went after the commit
    assert verify(store).ok
    with pytest.raises(Exception, match="uq_writers_run_attempt"):
        postgres.sql("INSERT INTO writers (run_id, attempt, started_at, dropped_rows) "
                     "VALUES ('r', 1, 1.0, 0)", db)
    # format 4: the triggers table, its index, and the renumbered attempt's writer takes one
    assert postgres.sql("SELECT indexname FROM pg_indexes WHERE tablename = 'triggers' "
                        "ORDER BY indexname", db) == [("ix_triggers_run_id",), ("triggers_pkey",)]
    trigger_id = store.record_trigger("r", 3, "nan", "NaN in 'loss:0'", step=9)
    assert [(t.trigger_id, t.writer_id, t.kind) for t in store.triggers("r")] == [
        (trigger_id, 3, "nan")]
    # format 5: the losses table, and the renumbered attempt's writer takes losses
    assert_losses_table(postgres, db)
    store.note_losses("r", 3, {("tfdbg_v1_tensors", "memory"): (5, 1 << 40, 1, 2)})
    assert [(x.attempt, x.table, x.bytes) for x in store.losses("r")] == [
        (3, "tfdbg_v1_tensors", 1 << 40)]


def assert_losses_table(postgres, db):
    """The format-5 losses table on PostgreSQL: 64-bit counts, its index, one row per
    (attempt, table, reason)."""
    cols = postgres.sql("SELECT column_name, data_type, is_nullable FROM "
                        "information_schema.columns WHERE table_name = 'losses' "
                        "ORDER BY ordinal_position", db)
    assert cols == [("loss_id", "integer", "NO"), ("run_id", "character varying", "NO"),
                    ("writer_id", "integer", "NO"), ("table_name", "character varying", "NO"),
                    ("reason", "character varying", "NO"), ("rows", "bigint", "NO"),
                    ("bytes", "bigint", "NO"), ("first_step", "bigint", "YES"),
                    ("last_step", "bigint", "YES"), ("updated_at", "double precision", "NO")]
    assert postgres.sql("SELECT indexname FROM pg_indexes WHERE tablename = 'losses' "
                        "ORDER BY indexname", db) == [
        ("ix_losses_run_id",), ("losses_pkey",), ("uq_losses_writer_table_reason",)]


FORMAT3_ROWS = """
INSERT INTO meta VALUES ('format_version', '3'), ('created_by', '0.1.0'), ('data_uri', '{data}');
INSERT INTO runs (run_id, status, config_json, tags_json, started_at)
    VALUES ('r', 'running', '{{}}', '[]', 1.0);
INSERT INTO writers (writer_id, run_id, attempt, started_at, first_step, dropped_rows)
    VALUES (1, 'r', 1, 1.0, 0, 0), (2, 'r', 2, 2.0, 5, 0);
SELECT setval('writers_writer_id_seq', 2);
INSERT INTO cursors VALUES ('r', 'wandb:/p', 4, '{{}}', 3.0);
"""


def test_a_format3_catalog_on_postgresql_upgrades(postgres, pg_url, tmp_path):
    """Revisions 0001-0003 run by alembic on PostgreSQL, rows as format 3 wrote them: opening
    it adds the triggers table (format 4) and the losses table (format 5) in one transaction
    and keeps every row."""
    data = str(tmp_path / "d")
    os.makedirs(os.path.join(data, "data"))
    upgrade_empty_catalog(pg_url, "0003")
    db = pg_url.rsplit("/", 1)[1]
    assert "triggers" not in {r[0] for r in postgres.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db)}
    for statement in FORMAT3_ROWS.format(data=data).strip().split(";\n"):
        postgres.sql(statement, db)
    store = Store.open(pg_url, access="write")      # a writer upgrades (readers refuse)
    found, newest = newest_format_postgres(postgres, db)
    assert found == newest
    assert [(w.writer_id, w.attempt, w.first_step) for w in store.writers("r")] == [
        (1, 1, 0), (2, 2, 5)]
    assert store.get_cursor("r", "wandb:/p") == (4, {})
    first = store.record_trigger("r", 2, "exception", "ValueError: boom", step=6,
                                 first_step=2, last_step=6, steps_written=5)
    second = store.record_trigger("r", None, "signal", "SIGTERM")
    got = Store.open(pg_url).triggers("r")
    assert [(t.trigger_id, t.writer_id, t.kind, t.first_step, t.last_step, t.steps_written)
            for t in got] == [(first, 2, "exception", 2, 6, 5), (second, None, "signal",
                                                                 None, None, 0)]
    assert first < second
    assert_losses_table(postgres, db)


FORMAT4_ROWS = """
INSERT INTO meta VALUES ('format_version', '4'), ('created_by', '0.1.0'), ('data_uri', '{data}');
INSERT INTO runs (run_id, status, config_json, tags_json, started_at)
    VALUES ('r', 'finished', '{{}}', '[]', 1.0);
INSERT INTO writers (writer_id, run_id, attempt, started_at, first_step, dropped_rows, error)
    VALUES (1, 'r', 1, 1.0, 0, 3, 'disk full'), (2, 'r', 2, 2.0, 5, 0, NULL);
SELECT setval('writers_writer_id_seq', 2);
INSERT INTO triggers (run_id, writer_id, step, kind, reason, fired_at, first_step, last_step,
    steps_written) VALUES ('r', 2, 7, 'nan', 'loss is NaN', 3.0, 5, 7, 3);
INSERT INTO cursors VALUES ('r', 'wandb:/p', 4, '{{}}', 3.0);
"""


def test_a_format4_catalog_on_postgresql_upgrades_to_format5(postgres, pg_url, tmp_path):
    """Revisions 0001-0004 run by alembic on PostgreSQL, rows as format 4 wrote them (an
    attempt's dropped jobs and error, a trigger, a cursor): opening it adds the losses table
    in one transaction and keeps every row."""
    data = str(tmp_path / "d")
    os.makedirs(os.path.join(data, "data"))
    upgrade_empty_catalog(pg_url, "0004")
    db = pg_url.rsplit("/", 1)[1]
    assert "losses" not in {r[0] for r in postgres.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db)}
    for statement in FORMAT4_ROWS.format(data=data).strip().split(";\n"):
        postgres.sql(statement, db)
    store = Store.open(pg_url, access="write")    # a writer upgrades (readers refuse)
    found, newest = newest_format_postgres(postgres, db)
    assert found == newest
    assert_losses_table(postgres, db)
    assert [(w.writer_id, w.attempt, w.dropped_rows, w.error) for w in store.writers("r")] == [
        (1, 1, 3, "disk full"), (2, 2, 0, None)]
    assert [(t.writer_id, t.kind, t.steps_written) for t in store.triggers("r")] == [
        (2, "nan", 3)]
    assert store.get_cursor("r", "wandb:/p") == (4, {})
    store.note_losses("r", 2, {("tfevents_records", "finish"): (7, 700, 8, 9)})
    assert [(x.attempt, x.table, x.reason, x.rows) for x in Store.open(pg_url).losses("r")] == [
        (2, "tfevents_records", "finish", 7)]


def test_the_revisions_build_the_catalog_the_models_do_on_postgresql(postgres, pg_url,
                                                                      tmp_path):
    Store.create(pg_url, data=str(tmp_path / "d"))
    other = postgres.database()
    upgrade_empty_catalog(other)
    new, migrated = catalog_layout(pg_url), catalog_layout(other)
    assert {"triggers", "losses"} <= set(new) and set(new) == set(migrated)
    for table in new:
        assert new[table] == migrated[table], table


def test_catalog_writes_wait_for_a_server_that_restarts(postgres, pg_url, tmp_path):
    """Connections dropped under the pool (terminated backends), then the server down for 3 s
    while a segment is registered: the write waits and lands, once."""
    store = Store.create(pg_url, data=str(tmp_path / "d"))
    store.create_run("r")
    w, a = store.begin_attempt("r")
    store.write_segment("r", "scalars", scalars([0], a), w)
    db = pg_url.rsplit("/", 1)[1]
    postgres.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 f"WHERE datname = '{db}' AND pid <> pg_backend_pid()")
    store.write_segment("r", "scalars", scalars([1], a), w)   # pre_ping replaced them
    postgres.stop()
    restart = threading.Timer(3.0, postgres.start)
    restart.start()
    try:
        t0 = time.monotonic()
        store.write_segment("r", "scalars", scalars([2], a), w)
        waited = time.monotonic() - t0
    finally:
        restart.join()
    assert waited >= 2.0
    assert store.scalars("r")["step"].to_pylist() == [0, 1, 2]
    assert len(store.segments("r")) == 3 and verify(store).ok


def test_a_run_created_by_another_process_between_lookup_and_insert_is_resumed(pg_url, tmp_path):
    """resume='allow' from processes starting one run at once: on PostgreSQL both may see no
    run, both insert; the loser's unique violation means 'it exists now', so it resumes."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from tfblackbox import recorder
    from tfblackbox.schema import RunExistsError
    Store.create(pg_url, data=str(tmp_path / "data"))
    rival = Store.open(pg_url, access="write")
    raced = []

    def insert_first(_conn, _cursor, statement, params, _context, _many):
        # the other process wins the insert, between our lookup and our insert
        if statement.startswith("INSERT INTO runs ") and not raced:
            raced.append(params["run_id"])
            rival.create_run(params["run_id"], pid=1)
    event.listen(Engine, "before_cursor_execute", insert_first)
    try:
        with pytest.raises(RunExistsError, match="'shared' already exists"):
            Store.open(pg_url, access="write").create_run("shared", pid=2)
        raced.clear()
        run = recorder.init(store=pg_url, run_id="resumed", resume="allow")
        recorder.finish()
    finally:
        event.remove(Engine, "before_cursor_execute", insert_first)
    assert raced == ["resumed"]
    assert run.attempt == 1 and [w.attempt for w in rival.writers("resumed")] == [1]
    assert {r.run_id: r.status for r in rival.runs()} == {"shared": "running",
                                                           "resumed": "finished"}


def test_artifacts_on_postgresql_come_back_byte_for_byte(postgres, pg_url, tmp_path):
    from tfblackbox import recorder
    model = tmp_path / "saved"
    model.mkdir()
    big = os.urandom(3 * 1024 * 1024)              # past the chunking threshold
    (model / "weights.bin").write_bytes(big)
    (model / "config.json").write_text('{"units": 4}')
    recorder.init(store=pg_url, data=str(tmp_path / "d"), project="p", run_id="art")
    recorder.log_artifact(str(model), name="saved", type="model", aliases=["best"])
    recorder.log_artifact(str(model), name="saved", type="model")    # same bytes again
    recorder.finish()
    store = Store.open(pg_url)
    versions = store.artifacts("art")
    assert [(v.name, v.version, v.type) for v in versions] == [("saved", 0, "model"),
                                                               ("saved", 1, "model")]
    assert "best" in versions[0].aliases
    files = {f.path: f for f in versions[1].files}
    with store.open_artifact_file(files["weights.bin"].sha256) as f:
        assert f.read() == big
    with store.open_artifact_file(files["config.json"].sha256) as f:
        assert f.read() == b'{"units": 4}'
    db = pg_url.rsplit("/", 1)[1]
    chunk_rows = postgres.sql("SELECT count(*), count(DISTINCT chunk_sha256) "
                              "FROM artifact_chunks", db)[0]
    assert chunk_rows[0] == chunk_rows[1] == 12     # 3 MiB in 256 KiB chunks, listed once
    assert verify(store).ok
