"""A run's start and end in fewer durable commits: begin_attempt(create=...) makes the run and
its first attempt in one transaction, end_attempt(finish=...) ends the attempt and finishes
the run in one, and import-tfevents joins that end to its last segment group. Each on SQLite
and on a real PostgreSQL server, with the refusals and a commit whose answer was lost."""

import errno
import logging
import time

import pytest

import tf2_files
from tfblackbox.ingest import tensorboard as import_tfevents
from tfblackbox.schema import RunExistsError, RunNotFoundError, Store
from tfblackbox.schema.store import segments
from test_triggers_catalog import behind_a_lost_commit_answer


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store.create(str(tmp_path / "s"))
    else:
        s = Store.create(request.getfixturevalue("pg_url"), data=str(tmp_path / "d"))
    yield s
    s.close()


def test_a_run_and_its_first_attempt_in_one_commit(store):
    before = store.catalog.writes
    writer_id, attempt = store.begin_attempt(
        "r", "h", 7, create=dict(name="n", project="p", tags=["t"], started_at=1000.0,
                                 config={"lr": 0.1}, pid=7))
    assert store.catalog.writes - before == 1
    run = store.run("r")
    assert (run.name, run.project, run.tags, run.started_at, run.config, run.status) == (
        "n", "p", ["t"], 1000.0, {"lr": 0.1}, "running")
    [w] = store.writers("r")
    assert (w.writer_id, w.attempt, w.host, w.pid, w.ended_at) == (writer_id, 1, "h", 7, None)
    assert attempt == 1
    # a second attempt of the same run, not created again
    assert store.begin_attempt("r", "h", 8)[1] == 2


def test_a_taken_run_id_is_refused_and_no_attempt_is_added(store):
    store.create_run("r", project="p")
    with pytest.raises(RunExistsError, match="run 'r' already exists"):
        store.begin_attempt("r", "h", 1, create=dict(name="other"))
    assert store.writers("r") == [] and store.run("r").name is None
    with pytest.raises(TypeError, match="unknown run fields"):
        store.begin_attempt("q", "h", 1, create=dict(colour="red"))
    assert not store.has_run("q")


def test_an_attempt_ends_and_its_run_finishes_in_one_commit(store):
    writer_id, _ = store.begin_attempt("r", "h", 1, create=dict(name="n"))
    before = store.catalog.writes
    store.end_attempt(writer_id, finish=("r", 0, 2000.0))
    assert store.catalog.writes - before == 1
    run, [w] = store.run("r"), store.writers("r")
    assert (run.status, run.exit_code, run.ended_at) == ("finished", 0, 2000.0)
    assert w.ended_at is not None and abs(w.ended_at - time.time()) < 60
    # a failed run, and an unknown one: the whole transaction is refused, the attempt too
    w2, _ = store.begin_attempt("r", "h", 2)
    store.end_attempt(w2, finish=("r", 3, None))
    assert (store.run("r").status, store.run("r").exit_code) == ("failed", 3)
    w3, _ = store.begin_attempt("r", "h", 3)
    with pytest.raises(RunNotFoundError, match="run 'nope' is not in store"):
        store.end_attempt(w3, finish=("nope", 0, None))
    assert [w.ended_at is None for w in store.writers("r")] == [False, False, True]


def test_a_created_run_whose_commit_answer_was_lost_is_made_once(postgres, pg_url, tmp_path,
                                                                  caplog):
    with behind_a_lost_commit_answer(postgres, pg_url, tmp_path) as (proxy, store):
        proxy.armed = True
        with caplog.at_level(logging.WARNING, logger="tfblackbox"):
            writer_id, attempt = store.begin_attempt("r", "h", 5, create=dict(name="n", pid=5))
        assert proxy.cut == 1 and "connection lost" in caplog.text
        assert attempt == 1 and [w.writer_id for w in store.writers("r")] == [writer_id]
        db = pg_url.rsplit("/", 1)[1]
        assert postgres.sql("SELECT run_id, name FROM runs", db) == [("r", "n")]


def _logdir(tmp_path):
    logdir = tmp_path / "logs"
    tf2_files.run_script("loop", logdir, "--steps", 12)
    return logdir


def test_an_import_commits_twice_and_ends_with_its_last_group(tmp_path):
    logdir = _logdir(tmp_path)
    store = Store.create(str(tmp_path / "s"))
    before = store.catalog.writes
    [result] = import_tfevents.import_logdir(store, str(logdir), run_id="i")
    # the run with its attempt, then the one segment group with the attempt's end
    assert store.catalog.writes - before == 2
    assert result["segments"] == len(store.segments("i")) >= 3
    run, [w] = store.run("i"), store.writers("i")
    assert run.status == "finished" and w.ended_at is not None
    assert run.ended_at == max(r["wall_time"] for r in store.read("i", "tfevents_records")
                               .to_pylist())
    # nothing new: nothing written
    before = store.catalog.writes
    assert import_tfevents.import_logdir(store, str(logdir), run_id="i")[0]["records"] == 0
    assert store.catalog.writes == before


def test_an_import_whose_files_cannot_be_written_ends_its_attempt_only(tmp_path, monkeypatch):
    """A full disk at the last group: the error reaches the caller, the attempt is ended, the
    run is not finished and keeps no segment; the next import brings everything."""
    logdir = _logdir(tmp_path)
    store = Store.create(str(tmp_path / "s"))
    real = segments.write_file

    def full(data, run_id, table_name, encoded, writer_id=None):
        if table_name == "scalars":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(data, run_id, table_name, encoded, writer_id)
    monkeypatch.setattr(segments, "write_file", full)
    with pytest.raises(OSError, match="No space left"):
        import_tfevents.import_logdir(store, str(logdir), run_id="i")
    [w] = store.writers("i")
    assert w.ended_at is not None and store.run("i").status == "running"
    assert store.segments("i") == []
    assert sorted(p.name for p in (tmp_path / "s").rglob("*.parquet")) == []
    monkeypatch.setattr(segments, "write_file", real)
    [result] = import_tfevents.import_logdir(store, str(logdir), run_id="i")
    assert result["records"] > 0 and store.run("i").status == "finished"
    assert [r["step"] for r in store.scalars("i").to_pylist() if r["tag"] == "loss"] == \
        list(range(12))


def test_the_plain_statements_give_what_the_catalog_holds(store):
    """create_run, begin_attempt and a segment's registration run plain SQL
    (schema/store/lifecycle_sql.py), and create_run's record is made from the values it
    inserted: each must be what a read of the catalog gives back, every field."""
    made = store.create_run("p", config={"lr": 0.5, "layers": (2, 3)}, tags=["a", "b"],
                            started_at=123.25, project="proj", name="nm", group="g1",
                            notes="why", host="h", pid=9, command="train.py",
                            python_version="3.11", tf_version="2.x", git_commit="abc")
    assert made == store.run("p")
    assert (made.group, made.config, made.exit_code, made.ended_at) == (
        "g1", {"lr": 0.5, "layers": [2, 3]}, None, None)
    first = store.begin_attempt("p", "h", 9)
    second = store.begin_attempt("p", "h2", 10)
    assert [(w.writer_id, w.attempt, w.host, w.pid, w.dropped_rows) for w in
            store.writers("p")] == [(first[0], 1, "h", 9, 0), (second[0], 2, "h2", 10, 0)]
    assert second[0] != first[0]
    rec = segments.register(store.catalog, "p", "scalars", second[0], "x/1.parquet", 4, 100,
                            "d" * 64, 3, 7)
    assert store.segments("p") == [rec]
    assert (rec.table, rec.writer_id, rec.path, rec.row_count, rec.min_step, rec.max_step) == (
        "scalars", second[0], "x/1.parquet", 4, 3, 7)
    assert store.writers("p")[1].first_step == 3   # registered steps move the attempt's first
    store.note_writer(second[0], first_step=5, dropped_rows=4)   # only lowers, only raises
    store.note_writer(second[0], first_step=1, dropped_rows=2, error="boom")
    w = store.writers("p")[1]
    assert (w.first_step, w.dropped_rows, w.error) == (1, 4, "boom")
    assert store.writers("p")[0].error is None
    with pytest.raises(TypeError, match="unknown run fields"):
        store.create_run("q", colour="red")
