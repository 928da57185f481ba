"""Catalog writes of a run's lifecycle: create, attempts (writers), finish, replay cursors.

These are bound as methods of Store (`store.create_run(...)`), so `self` is a Store.
"""

import json
import time

from sqlalchemy import exc

from . import catalog as cat
from ..errors import CatalogError, RunExistsError, RunNotFoundError
from .records import run_record

ATTEMPT_TRIES = 20
RUN_FIELDS = ("project", "name", "group", "notes", "host", "pid", "command", "python_version",
              "tf_version", "tfblackbox_version", "git_commit")


def create_run(self, run_id, config=None, tags=None, started_at=None, **fields):
    """Inserts a new run in status 'running'; refuses an id that exists. `started_at`
    (default: now) is for importers, whose run began with its first event."""
    unknown = set(fields) - set(RUN_FIELDS)
    if unknown:
        raise TypeError(f"unknown run fields {sorted(unknown)}")
    now = time.time()

    def create(s):
        row = s.get(cat.RunRow, run_id)
        if row is not None:
            if s.info.get("retry") and row.heartbeat_at == now and row.pid == fields.get("pid"):
                return run_record(row)   # ours: a commit whose answer was lost
            raise RunExistsError(f"run {run_id!r} already exists in store {self.root}")
        row = cat.RunRow(run_id=run_id, status="running", config_json=cat.dumps(config or {}),
                         tags_json=json.dumps(list(tags or [])),
                         started_at=now if started_at is None else started_at,
                         heartbeat_at=now, **fields)
        s.add(row)
        s.flush()
        return run_record(row)
    try:
        return self.catalog.transact(create)
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


def begin_attempt(self, run_id, host=None, pid=None):
    """Registers a new writer (attempt n+1) for the run; returns (writer_id, attempt).

    Attempt numbers are unique per run (a constraint of the catalog): processes that start
    the same run at once take turns for the write lock (SQLite) or, where two transactions
    read the same last attempt (PostgreSQL), the loser tries again with the next number."""
    started = time.time()

    def begin(s):
        if s.info.get("retry"):   # a commit whose answer was lost: that attempt is ours
            mine = s.scalar(cat.select(cat.WriterRow).where(
                cat.WriterRow.run_id == run_id, cat.WriterRow.started_at == started,
                cat.WriterRow.pid == pid, cat.WriterRow.host == host))
            if mine is not None:
                return mine.writer_id, mine.attempt
        last = s.scalar(cat.select(cat.WriterRow.attempt).where(
            cat.WriterRow.run_id == run_id).order_by(cat.WriterRow.attempt.desc()).limit(1))
        w = cat.WriterRow(run_id=run_id, attempt=(last or 0) + 1, host=host, pid=pid,
                          started_at=started, dropped_rows=0)
        s.add(w)
        s.flush()
        return w.writer_id, w.attempt
    for _ in range(ATTEMPT_TRIES):
        try:
            return self.catalog.transact(begin)
        except CatalogError as e:
            if not isinstance(e.__cause__, exc.IntegrityError):
                raise
    raise CatalogError(f"run {run_id!r} in store {self.root}: no free attempt number after "
                       f"{ATTEMPT_TRIES} tries (too many processes starting it at once?)")


def note_writer(self, writer_id, first_step=None, dropped_rows=None, error=None):
    """Lowers first_step, raises dropped_rows, or records an error for a writer."""
    def note(s):
        w = s.get(cat.WriterRow, writer_id)
        if w is None:
            return
        if first_step is not None and (w.first_step is None or first_step < w.first_step):
            w.first_step = first_step
        if dropped_rows is not None:
            w.dropped_rows = max(w.dropped_rows or 0, dropped_rows)
        if error is not None:
            w.error = error
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


def end_attempt(self, writer_id):
    def end(s):
        w = s.get(cat.WriterRow, writer_id)
        if w is not None:
            w.ended_at = time.time()
    self.catalog.transact(end)


def finish_run(self, run_id, exit_code=0, ended_at=None):
    """Marks the run finished (exit 0) or failed; `ended_at` (default: now) is for importers."""
    def finish(s):
        row = s.get(cat.RunRow, run_id)
        if row is None:
            raise RunNotFoundError(f"run {run_id!r} is not in store {self.root}")
        row.status = "finished" if exit_code == 0 else "failed"
        row.exit_code = exit_code
        row.ended_at = row.heartbeat_at = time.time() if ended_at is None else ended_at
    self.catalog.transact(finish)


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
