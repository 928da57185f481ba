"""How a reader's catalog connection is kept from writing: the database itself refuses.

SQLite: the file is opened `mode=ro` (SQLite refuses every write and, for a catalog with a
rollback journal, creates no file to read it), or `immutable=1` where nothing can change the
file (read-only media; a WAL catalog with no log, where `mode=ro` would create -wal and -shm).
PostgreSQL: every session is set READ ONLY, so the server refuses any write.

The one thing a SQLite reader lets happen: a writer killed inside a catalog transaction leaves
a hot journal that SQLite must roll back before anyone can read the file (its crash recovery:
the catalog returns to its last commit, nothing committed changes). A `mode=ro` connection
cannot, and fails with SQLITE_READONLY_ROLLBACK; the reader then lets an ordinary connection
do it once, and reads on (catalog.Catalog.transact).
"""

import os

BUSY_TIMEOUT_MS = 30_000   # every catalog connection's (catalog.py's too): a commit takes a moment


def sqlite_read_only_pragmas(dbapi_conn, _record):
    """A reader's connection (opened `mode=ro`, or `immutable` on read-only media): the
    driver's BEGIN off as for writers, the busy timeout (a writer's commit holds the lock for
    a moment), nothing memory-mapped; no journal mode is set (setting one is a write)."""
    dbapi_conn.isolation_level = None
    dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    dbapi_conn.execute("PRAGMA mmap_size=0")


def server_read_only(dbapi_conn, _record):
    """A reader's PostgreSQL session: every transaction READ ONLY, so the server itself
    refuses any write (a reader changes nothing)."""
    cur = dbapi_conn.cursor()
    cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cur.close()
    dbapi_conn.commit()


def sqlite_reader(path, immutable=False):
    """A connection factory for a reader of the SQLite file at `path`: `mode=ro`, so SQLite
    refuses every write and creates no file (a rollback-journal catalog needs none to be
    read); `immutable` where nothing can change the file (read-only media: no locks either)."""
    import sqlite3
    from urllib.parse import quote
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro" + ("&immutable=1" if immutable else "")
    return lambda: sqlite3.connect(uri, uri=True, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)


def hot_journal(error):
    """Whether a reader's read failed because a writer killed mid-transaction left a hot
    journal, which SQLite must roll back before anyone can read the catalog."""
    orig = getattr(error, "orig", None)
    return getattr(orig, "sqlite_errorname", None) == "SQLITE_READONLY_ROLLBACK"


def roll_back_hot_journal(path):
    """Lets SQLite roll back the half-done transaction of a killed writer (its own crash
    recovery: the catalog returns to its last commit, nothing committed changes) by reading
    once through an ordinary connection."""
    import sqlite3
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        con.execute("PRAGMA mmap_size=0")
        con.execute("SELECT count(*) FROM sqlite_master").fetchall()
    finally:
        con.close()
