"""The SQLite (or any SQLAlchemy URL) catalog: typed models and one managed session.

ORM rows never leave the schema package; `store.py` turns them into plain records.
A server catalog (PostgreSQL) gets a connection pool that checks a connection before use, and
`transact` retries a transaction whose connection dropped (a server restart, a failover).
"""

import contextlib
import json
import logging
import re
import threading
import time

from sqlalchemy import (BigInteger, Float, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint, create_engine, delete, event, exc, insert, make_url,
                        select, text, update)
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from ..errors import CatalogError, ReadOnlyStoreError
from .read_only import (BUSY_TIMEOUT_MS, hot_journal, roll_back_hot_journal, server_read_only,
                        sqlite_read_only_pragmas, sqlite_reader)
from .migrate import FORMAT_VERSION

log = logging.getLogger("tfblackbox")

JOURNAL_MODE = "DELETE"
# A transaction whose server connection dropped is tried again for this long (backing off
# from RETRY_FIRST_SECS to RETRY_MAX_SECS between tries): a restart of the server under a
# running training costs a wait on the writer thread, not an error.
RETRY_SECS = 60.0
RETRY_FIRST_SECS = 0.05
RETRY_MAX_SECS = 2.0
# a server that refuses a connection for these reasons will take it later (others, such as a
# database that does not exist or a role refused, are final)
_TRANSIENT_REFUSALS = ("the database system is", "too many clients", "connection slots",
                       "terminating connection", "administrator command")
STORE_LOCK_KEY = 0x7466626C61636B   # b"tfblack": the advisory lock of store-wide changes


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


class TriggerRow(Base):
    """A black-box trigger that fired (nan, exception, signal, spike, callable): why, when,
    and which of the dumped steps kept in memory it had written (schema/store/triggers.py)."""
    __tablename__ = "triggers"
    trigger_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    writer_id: Mapped[int | None] = mapped_column(ForeignKey("writers.writer_id"))
    step: Mapped[int | None] = mapped_column(Integer)          # the step it fired at
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    fired_at: Mapped[float] = mapped_column(Float)
    first_step: Mapped[int | None] = mapped_column(Integer)    # dumped steps it wrote
    last_step: Mapped[int | None] = mapped_column(Integer)
    steps_written: Mapped[int] = mapped_column(Integer, default=0)


class LossRow(Base):
    """Rows an attempt recorded that never reached the store (format 5): per table and reason,
    how many, their bytes in memory and their steps (schema/store/losses.py). Reasons:
    "memory" (dropped past the writer's max_unwritten_bytes while the store could not take
    them), "finish" (still unwritten when the attempt ended)."""
    __tablename__ = "losses"
    loss_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    writer_id: Mapped[int] = mapped_column(ForeignKey("writers.writer_id"))
    table_name: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    first_step: Mapped[int | None] = mapped_column(BigInteger)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("writer_id", "table_name", "reason",
                                       name="uq_losses_writer_table_reason"),)


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


class ArtifactVersionRow(Base):
    """One version of an artifact (a checkpoint, a SavedModel, a file set): registered in one
    transaction with its files, after their blobs are written (schema/store/artifacts.py).
    `token` names the logging event across stores (merge, retried commits)."""
    __tablename__ = "artifact_versions"
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id"), index=True)
    writer_id: Mapped[int | None] = mapped_column(ForeignKey("writers.writer_id"))
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(128))
    aliases_json: Mapped[str] = mapped_column(Text, default="[]")
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")
    step: Mapped[int | None] = mapped_column(BigInteger)
    wall_time: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("run_id", "name", "version",
                                       name="uq_artifact_versions_run_name_version"),
                      UniqueConstraint("token", name="uq_artifact_versions_token"))


class ArtifactFileRow(Base):
    """A file of an artifact version: its path inside the artifact and its blob (sha256)."""
    __tablename__ = "artifact_files"
    version_id: Mapped[int] = mapped_column(ForeignKey("artifact_versions.version_id"),
                                            primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class ArtifactChunkRow(Base):
    """A chunk of a large artifact file (chunks.py): the file's bytes are its chunks' blobs in
    `seq` order; a file with no rows here is one whole blob."""
    __tablename__ = "artifact_chunks"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)   # the whole file's
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    chunk_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


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


_tx = threading.local()   # whether the session being begun on this thread will write


def _begin(conn):
    # A write that starts as a read (BEGIN) and upgrades later can fail at once with "database
    # is locked" when another process writes too (SQLite skips the busy handler where waiting
    # could deadlock); BEGIN IMMEDIATE takes the write lock first, waiting up to the timeout.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if getattr(_tx, "write", False) else "BEGIN")


class Catalog:
    """An engine plus a session factory; `session()` (reads) and `write()` (writes) commit or
    roll back as one unit and turn database errors into BlackboxError naming the catalog;
    `transact(fn)` runs fn(session) as one transaction, retried on a dropped connection.

    `read_only`: a reader's catalog, which the database itself keeps from writing (SQLite
    opened `mode=ro`, or `immutable` on read-only media; PostgreSQL sessions READ ONLY);
    `transact(write=True)` on it is refused before anything is sent."""

    def __init__(self, url, retry_secs=RETRY_SECS, read_only=False, immutable=False):
        self.url, self.read_only, self.immutable = url, read_only or immutable, immutable
        self.for_reader = read_only   # (immutable alone: a writer's store on read-only media)
        try:
            self.shown = display_url(url)
            backend = make_url(url).get_backend_name()
        except exc.ArgumentError as e:
            raise CatalogError(f"catalog URL {url!r} cannot be used: {e}; expected a "
                               f"SQLAlchemy URL such as postgresql+psycopg://host/db") from e
        self.retry_secs = retry_secs
        self.write_seconds, self.writes = 0.0, 0     # time in write transactions (benchmarks)
        self.sqlite_file = make_url(url).database if backend == "sqlite" else None
        if backend == "sqlite" and self.read_only:
            self.engine = create_engine(url, future=True,
                                        creator=sqlite_reader(self.sqlite_file, immutable))
            event.listen(self.engine, "connect", sqlite_read_only_pragmas)
            event.listen(self.engine, "begin", _begin)
        elif backend == "sqlite":
            self.engine = create_engine(url, future=True)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _begin)
        else:
            # pre_ping: a pooled connection the server closed (restart, idle timeout) is
            # replaced before use instead of failing the transaction
            try:
                self.engine = create_engine(url, future=True, pool_pre_ping=True, pool_size=2,
                                            max_overflow=8, pool_recycle=1800)
            except ImportError as e:
                extra = ("; pip install 'tfblackbox[postgres]' for postgresql+psycopg://"
                         if "psycopg" in str(e) else "")
                raise CatalogError(f"catalog {self.shown}: its database driver is not "
                                   f"installed: {e}{extra}") from e
            except (exc.ArgumentError, exc.NoSuchModuleError) as e:
                raise CatalogError(f"catalog URL {self.shown!r} cannot be used: {e}; expected "
                                   f"a SQLAlchemy URL such as postgresql+psycopg://host/db"
                                   ) from e
            if self.read_only and self.engine.dialect.name == "postgresql":
                event.listen(self.engine, "connect", server_read_only)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

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
                with contextlib.suppress(exc.SQLAlchemyError):
                    s.rollback()
                raise CatalogError(f"catalog {self.shown}: {e.__class__.__name__}: "
                                   f"{_without_credentials(e, self.url)}") from e
            except BaseException:
                s.rollback()
                raise
            finally:
                s.close()

    def transact(self, fn, write=True):
        """fn(session) in one transaction (committed on return), tried again while its
        connection dropped, for up to retry_secs. A retry after a commit whose answer was
        lost may find the work done: `session.info["retry"]` (the try number) tells fn to
        look before it writes again."""
        if write and self.read_only:
            raise ReadOnlyStoreError(
                f"catalog {self.sqlite_file or self.shown} was opened to read, and readers "
                f"change nothing: "
                f"open the store with Store.open(..., access='write') to write to it"
                if self.for_reader else
                f"catalog {self.sqlite_file or self.shown} is on read-only media: nothing can "
                f"be written to it")
        delay, deadline, tries = RETRY_FIRST_SECS, time.monotonic() + self.retry_secs, 0
        recovered = False
        while True:
            t0 = time.perf_counter()
            try:
                with self.session(write=write) as s:
                    s.info["retry"] = tries
                    result = fn(s)
                if write:
                    self.write_seconds += time.perf_counter() - t0
                    self.writes += 1
                if tries:
                    log.warning("tfblackbox: catalog %s answers again (after %d tries)",
                                self.shown, tries + 1)
                return result
            except CatalogError as e:
                if (self.read_only and not self.immutable and not recovered
                        and hot_journal(e.__cause__)):
                    roll_back_hot_journal(self.sqlite_file)
                    recovered = True
                    continue
                if not self.retryable(e.__cause__) or time.monotonic() + delay > deadline:
                    raise
                if tries == 0:
                    log.warning("tfblackbox: catalog %s: connection lost (%s); trying again "
                                "for up to %.0f s", self.shown, type(e.__cause__).__name__,
                                self.retry_secs)
            tries += 1
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECS)

    def read(self, fn):
        return self.transact(fn, write=False)

    def retryable(self, error):
        """A dropped or refused server connection, a server shutting down or starting up, or
        a transaction it aborted to break a deadlock or a serialization conflict; never a
        SQLite file's own error, a missing database or refused credentials."""
        if not isinstance(error, exc.DBAPIError):
            return False
        if error.connection_invalidated:
            return True
        if self.dialect == "sqlite" or not isinstance(error, (exc.OperationalError,
                                                              exc.InterfaceError)):
            return False
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        if state is None:   # no answer from the server, or a refusal while connecting
            text = str(error.orig)
            return "FATAL:" not in text or any(t in text for t in _TRANSIENT_REFUSALS)
        return state.startswith(("08", "57P")) or state in ("40001", "40P01", "53300")

    def lock_store(self, session):
        """Serialises store-wide changes (creation, upgrades) between processes: on
        PostgreSQL a transaction-scoped advisory lock; SQLite's write lock already is one."""
        if self.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": STORE_LOCK_KEY})

    def get_meta(self, key):
        def get(s):
            row = s.get(Meta, key)
            return None if row is None else row.value
        return self.read(get)

    def set_meta(self, session, key, value):
        session.merge(Meta(key=key, value=str(value)))

    def table_names(self):
        from sqlalchemy import inspect
        return self.read(lambda s: set(inspect(s.connection()).get_table_names()))

    def dispose(self):
        self.engine.dispose()


def is_url(spec):
    """True for a SQLAlchemy database URL ('postgresql+psycopg://...', 'sqlite:///...')."""
    spec = str(spec)
    if "://" not in spec:
        return False
    try:
        make_url(spec)
    except exc.ArgumentError:
        return False
    return True


def display_url(url):
    """The URL without user name or password: what messages and records may show."""
    u = make_url(url)
    query = {k: v for k, v in u.query.items() if not _SECRET_QUERY.search(k)}
    shown = URL.create(u.drivername, host=u.host, port=u.port, database=u.database,
                       query=query)
    return shown.render_as_string(hide_password=False)


_SECRET_QUERY = re.compile(r"(password|secret|token|key)", re.I)


def _without_credentials(error, url):
    text = str(error)
    u = make_url(url)
    secrets = [u.password] + [v for k, v in u.query.items() if _SECRET_QUERY.search(k)]
    for secret in secrets:
        for value in (secret if isinstance(secret, tuple) else (secret,)):
            if value:
                text = text.replace(str(value), "***")
    return text


def dumps(obj):
    return json.dumps(obj, sort_keys=True, default=str)


__all__ = ["Catalog", "is_url", "display_url", "Base", "Meta", "RunRow", "WriterRow", "SegmentRow",
           "CursorRow", "TriggerRow", "LossRow", "ArtifactVersionRow", "ArtifactFileRow",
           "FORMAT_VERSION", "dumps", "select", "insert", "update", "delete"]
