"""The SQLite (or any SQLAlchemy URL) catalog: typed models and one managed session.

ORM rows never leave the schema package; `store.py` turns them into plain records.
"""

import contextlib
import json
import threading

from sqlalchemy import (Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint,
                        create_engine, event, exc, select)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from .errors import CatalogError
from .migrate import FORMAT_VERSION

BUSY_TIMEOUT_MS = 30_000
JOURNAL_MODE = "DELETE"


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RunRow(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str | None] = mapped_column(String(256))
    name: Mapped[str | None] = mapped_column(String(256))
    group: Mapped[str | None] = mapped_column("group_name", String(256))
    notes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))          # running | finished | failed
    exit_code: Mapped[int | None] = mapped_column(Integer)
    config_json: Mapped[str] = mapped_column(Text, default="{}")
    tags_json: Mapped[str] = mapped_column(Text, default="[]")
    host: Mapped[str | None] = mapped_column(String(256))
    pid: Mapped[int | None] = mapped_column(Integer)
    command: Mapped[str | None] = mapped_column(Text)
    python_version: Mapped[str | None] = mapped_column(String(64))
    tf_version: Mapped[str | None] = mapped_column(String(64))
    tfblackbox_version: Mapped[str | None] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)


class WriterRow(Base):
    """One recording attempt of a run: a process that called init (again, on resume)."""
    __tablename__ = "writers"
    writer_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(256))
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    first_step: Mapped[int | None] = mapped_column(Integer)   # lowest step it registered
    dropped_rows: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (UniqueConstraint("run_id", "attempt", name="uq_writers_run_attempt"),)


class SegmentRow(Base):
    __tablename__ = "segments"
    segment_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"))
    table_name: Mapped[str] = mapped_column(String(64))
    writer_id: Mapped[int | None] = mapped_column(ForeignKey("writers.writer_id"))
    path: Mapped[str] = mapped_column(String(1024), unique=True)   # relative to the store
    row_count: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    min_step: Mapped[int | None] = mapped_column(Integer)
    max_step: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_segments_run_table", "run_id", "table_name"),)


class CursorRow(Base):
    """How far a replay destination has taken a run (used by replay)."""
    __tablename__ = "cursors"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), primary_key=True)
    destination: Mapped[str] = mapped_column(String(256), primary_key=True)
    step: Mapped[int | None] = mapped_column(Integer)
    state_json: Mapped[str] = mapped_column(Text, default="{}")
    updated_at: Mapped[float] = mapped_column(Float)


def _sqlite_pragmas(dbapi_conn, _record):
    # The driver's own BEGIN is off: _begin() below emits BEGIN, or BEGIN IMMEDIATE for writes.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Nothing of the catalog is memory-mapped in the training process: WAL's -shm index is
    # always mmap'd, and a -shm file truncated or unwritable under a live writer killed it with
    # SIGBUS. A rollback journal needs no shared memory; catalog transactions are a few rows
    # every flush, so readers blocking the writer for a moment costs nothing measurable.
    cur.execute("PRAGMA mmap_size=0")
    cur.execute(f"PRAGMA journal_mode={JOURNAL_MODE}")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_read_only_pragmas(dbapi_conn, _record):
    """A store on read-only media (a USB disk mounted ro): opened immutable, so SQLite takes
    no locks and needs no journal or -shm file (a WAL store of format 1 opens too)."""
    dbapi_conn.isolation_level = None
    dbapi_conn.execute("PRAGMA mmap_size=0")


_tx = threading.local()   # whether the session being begun on this thread will write


def _begin(conn):
    # A write that starts as a read (BEGIN) and upgrades later can fail at once with "database
    # is locked" when another process writes too (SQLite skips the busy handler where waiting
    # could deadlock); BEGIN IMMEDIATE takes the write lock first, waiting up to the timeout.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if getattr(_tx, "write", False) else "BEGIN")


class Catalog:
    """An engine plus a session factory; `session()` (reads) and `write()` (writes) commit or
    roll back as one unit and turn database errors into BlackboxError naming the catalog."""

    def __init__(self, url, read_only=False):
        self.url, self.read_only = url, read_only
        try:
            self.engine = create_engine(url, future=True)
        except (exc.ArgumentError, exc.NoSuchModuleError, ImportError, ValueError) as e:
            shown = url.split("@")[-1] if "@" in str(url) else url   # no password in messages
            raise CatalogError(f"catalog URL {shown!r} cannot be used: {e}; expected a "
                               f"SQLAlchemy URL such as postgresql+psycopg://host/db") from e
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect",
                         _sqlite_read_only_pragmas if read_only else _sqlite_pragmas)
            event.listen(self.engine, "begin", _begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def write(self):
        return self.session(write=True)

    @contextlib.contextmanager
    def writing(self, write=True):
        """Transactions begun on this thread inside this block take the write lock first."""
        outer = getattr(_tx, "write", False)
        _tx.write = write
        try:
            yield
        finally:
            _tx.write = outer

    @contextlib.contextmanager
    def session(self, write=False):
        with self.writing(write):
            s = self._sessions()
            try:
                yield s
                s.commit()
            except exc.SQLAlchemyError as e:
                s.rollback()
                raise CatalogError(f"catalog {self.url}: {e.__class__.__name__}: {e}") from e
            except BaseException:
                s.rollback()
                raise
            finally:
                s.close()

    def create_all(self):
        Base.metadata.create_all(self.engine)

    def get_meta(self, key):
        with self.session() as s:
            row = s.get(Meta, key)
            return None if row is None else row.value

    def set_meta(self, session, key, value):
        session.merge(Meta(key=key, value=str(value)))

    def table_names(self):
        from sqlalchemy import inspect
        try:
            return set(inspect(self.engine).get_table_names())
        except exc.SQLAlchemyError as e:
            raise CatalogError(f"catalog {self.url}: {e.__class__.__name__}: {e}") from e

    def dispose(self):
        self.engine.dispose()


def dumps(obj):
    return json.dumps(obj, sort_keys=True, default=str)


__all__ = ["Catalog", "Base", "Meta", "RunRow", "WriterRow", "SegmentRow", "CursorRow",
           "FORMAT_VERSION", "dumps", "select"]
