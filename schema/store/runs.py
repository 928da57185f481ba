"""Catalog writes of a run's lifecycle: create, attempts (writers), finish, replay cursors.

These are bound as methods of Store (`store.create_run(...)`), so `self` is a Store.
"""

import json
import time
import types

from sqlalchemy import exc

from . import catalog as cat
from . import lifecycle_sql as sql
from ..errors import CatalogError, RunExistsError, RunNotFoundError
from .records import run_record

ATTEMPT_TRIES = 20
RUN_FIELDS = ("project", "name", "group", "notes", "host", "pid", "command", "python_version",
              "tf_version", "tfblackbox_version", "git_commit")


def create_run(self, run_id, config=None, tags=None, started_at=None, **fields):
    """Inserts a new run in status 'running'; refuses an id that exists. `started_at`
    (default: now) is for importers, whose run began with its first event."""
    insert = _run_insert(self, run_id, config, tags, started_at, fields)
    return _refusing_a_taken_id(self, run_id, lambda: self.catalog.transact(insert))


def _run_insert(self, run_id, config, tags, started_at, fields):
    """The statement create_run runs in its transaction: fn(session) -> RunRecord."""
    unknown = set(fields) - set(RUN_FIELDS)
    if unknown:
        raise TypeError(f"unknown run fields {sorted(unknown)}")
    now = time.time()

    def create(s):
        found = s.execute(sql.RUN_EXISTS, {"run_id": run_id}).first()
        if found is not None:
            if s.info.get("retry") and found.heartbeat_at == now and found.pid == fields.get("pid"):
                return run_record(s.get(cat.RunRow, run_id))   # ours: its answer was lost
            raise RunExistsError(f"run {run_id!r} already exists in store {self.root}")
        values = sql.row(sql.INSERT_RUN, run_id=run_id, status="running",
                         config_json=cat.dumps(config or {}),
                         tags_json=json.dumps(list(tags or [])),
                         started_at=now if started_at is None else started_at, heartbeat_at=now,
                         **{("group_name" if k == "group" else k): v for k, v in fields.items()})
        s.execute(sql.INSERT_RUN.plain, values)
        values["group"] = values.pop("group_name")
        return run_record(types.SimpleNamespace(**values))
    return create


def _refusing_a_taken_id(self, run_id, transact):
    try:
        return transact()
    except CatalogError as e:
        # PostgreSQL: another process inserted the same id after our lookup; its commit won
        if isinstance(e.__cause__, exc.IntegrityError) and self.has_run(run_id):
            raise RunExistsError(f"run {run_id!r} already exists in store {self.root}") from e
        raise


def reopen_run(self, run_id, config=None, tags=None, **fields):
    """Marks an existing run running again (resume); merges config, replaces given fields."""
    def reopen(s):
        row = s.get(cat.RunRow, run_id)
        if row is None:
            raise RunNotFoundError(f"run {run_id!r} is not in store {self.root}")
        if config:
            merged = json.loads(row.config_json or "{}")
            merged.update(config)
            row.config_json = cat.dumps(merged)
        if tags is not None:
            row.tags_json = json.dumps(list(tags))
        for k, v in fields.items():
            if v is not None:
                setattr(row, k, v)
        row.status, row.exit_code, row.ended_at = "running", None, None
        row.heartbeat_at = time.time()
        s.flush()
        return run_record(row)
    return self.catalog.transact(reopen)


def begin_attempt(self, run_id, host=None, pid=None, create=None):
    """Registers a new writer (attempt n+1) for the run; returns (writer_id, attempt).
    `create` (create_run's keywords) creates the run in the same transaction: an importer
    pays for one durable commit, not two.

    Attempt numbers are unique per run (a constraint of the catalog): processes that start
    the same run at once take turns for the write lock (SQLite) or, where two transactions
    read the same last attempt (PostgreSQL), the loser tries again with the next number."""
    started = time.time()
    insert = None
    if create is not None:
        fields = dict(create)
        insert = _run_insert(self, run_id, fields.pop("config", None), fields.pop("tags", None),
                             fields.pop("started_at", None), fields)

    def begin(s):
        if insert is not None:
            insert(s)
        if s.info.get("retry"):   # a commit whose answer was lost: that attempt is ours
            mine = s.scalar(cat.select(cat.WriterRow).where(
                cat.WriterRow.run_id == run_id, cat.WriterRow.started_at == started,
                cat.WriterRow.pid == pid, cat.WriterRow.host == host))
            if mine is not None:
                return mine.writer_id, mine.attempt
        attempt = (s.scalar(sql.LAST_ATTEMPT, {"run_id": run_id}) or 0) + 1
        writer_id = sql.INSERT_WRITER.new_id(s, sql.row(
            sql.INSERT_WRITER, run_id=run_id, attempt=attempt, host=host, pid=pid,
            started_at=started, dropped_rows=0))
        return writer_id, attempt
    for _ in range(ATTEMPT_TRIES):
        try:
            if insert is not None:
                return _refusing_a_taken_id(self, run_id, lambda: self.catalog.transact(begin))
            return self.catalog.transact(begin)
        except CatalogError as e:
            if not isinstance(e.__cause__, exc.IntegrityError):
                raise
    raise CatalogError(f"run {run_id!r} in store {self.root}: no free attempt number after "
                       f"{ATTEMPT_TRIES} tries (too many processes starting it at once?)")


def note_writer(self, writer_id, first_step=None, dropped_rows=None, error=None):
    """Lowers first_step, raises dropped_rows, or records an error for a writer."""
    def note(s):   # plain statements: each finish() runs this once (lifecycle_sql.py)
        if first_step is not None:
            s.execute(sql.WRITER_FIRST_STEP, {"step": first_step, "writer_id": writer_id})
        if dropped_rows is not None:
            s.execute(sql.WRITER_DROPPED, {"dropped": dropped_rows, "writer_id": writer_id})
        if error is not None:
            s.execute(sql.WRITER_ERROR, {"error": error, "writer_id": writer_id})
    self.catalog.transact(note)


def note_run(self, run_id, **fields):
    """Fills run facts learned after init (the TensorFlow version, once TF is imported)."""
    unknown = set(fields) - set(RUN_FIELDS)
    if unknown:
        raise TypeError(f"unknown run fields {sorted(unknown)}")

    def note(s):
        row = s.get(cat.RunRow, run_id)
        if row is not None:
            for k, v in fields.items():
                setattr(row, k, v)
    self.catalog.transact(note)


def end_attempt(self, writer_id, finish=None):
    """Marks a writer ended; `finish` ((run_id, exit_code, ended_at)) finishes its run in the
    same transaction."""
    self.catalog.transact(attempt_end(self, writer_id, finish))


def attempt_end(self, writer_id, finish=None):
    """end_attempt's statements, fn(session), for a caller that joins them to a transaction
    of its own (an importer's last segment group)."""
    done = None if finish is None else _run_finish(self, *finish)

    def end(s):
        s.execute(sql.WRITER_END, {"now": time.time(), "writer_id": writer_id})
        if done is not None:
            done(s)
    return end


def finish_run(self, run_id, exit_code=0, ended_at=None):
    """Marks the run finished (exit 0) or failed; `ended_at` (default: now) is for importers."""
    self.catalog.transact(_run_finish(self, run_id, exit_code, ended_at))


def _run_finish(self, run_id, exit_code, ended_at):
    def finish(s):   # a plain statement: cheaper than loading the row (no ORM flush)
        end = time.time() if ended_at is None else ended_at
        done = s.execute(sql.RUN_FINISH, {
            "status": "finished" if exit_code == 0 else "failed", "exit_code": exit_code,
            "end": end, "run_id": run_id})
        if done.rowcount == 0:
            raise RunNotFoundError(f"run {run_id!r} is not in store {self.root}")
    return finish


def get_cursor(self, run_id, destination):
    """(step, state dict) of a replay destination for a run; (None, {}) if never replayed."""
    def get(s):
        row = s.get(cat.CursorRow, (run_id, destination))
        if row is None:
            return None, {}
        return row.step, json.loads(row.state_json or "{}")
    return self.catalog.read(get)


def set_cursor(self, run_id, destination, step, state=None):
    """Records how far a replay destination has taken a run: the one catalog write of a
    store opened for a replay (Store.open(..., access="replay"))."""
    row = dict(run_id=run_id, destination=destination, step=step,
               state_json=cat.dumps(state or {}), updated_at=time.time())
    self.cursor_catalog().transact(lambda s: s.merge(cat.CursorRow(**row)))
