"""The catalog statements every run's life pays for once, as plain SQL.

A process that records or imports one run runs each of these once or twice. SQLAlchemy
compiles a Core or ORM statement the first time a process runs it, ~1 ms each here, and an
ORM flush adds its unit of work: an import's begin and last commit spent 6-8 ms of CPU each,
most of it compiling, against ~0.3 ms to execute. `text()` statements skip the compiler and run
on SQLite and PostgreSQL alike (named parameters, `RETURNING` for new ids). The ORM models in
catalog.py stay the schema: the column lists here are read from them.
"""

from sqlalchemy import text

from . import catalog as cat


def _insert(table, returning=None):
    names = [c.name for c in table.columns if c.name != returning]
    sql = (f"INSERT INTO {table.name} ({', '.join(names)}) "
           f"VALUES ({', '.join(':' + n for n in names)})")
    return names, text(sql + (f" RETURNING {returning}" if returning else ""))


RUN_COLUMNS, INSERT_RUN = _insert(cat.RunRow.__table__)
WRITER_COLUMNS, INSERT_WRITER = _insert(cat.WriterRow.__table__, returning="writer_id")
SEGMENT_COLUMNS, INSERT_SEGMENT = _insert(cat.SegmentRow.__table__, returning="segment_id")

RUN_EXISTS = text("SELECT heartbeat_at, pid FROM runs WHERE run_id = :run_id")
LAST_ATTEMPT = text("SELECT max(attempt) FROM writers WHERE run_id = :run_id")
RUN_HEARTBEAT = text("UPDATE runs SET heartbeat_at = :now WHERE run_id = :run_id")
WRITER_FIRST_STEP = text("UPDATE writers SET first_step = :step WHERE writer_id = :writer_id "
                         "AND (first_step IS NULL OR first_step > :step)")
WRITER_END = text("UPDATE writers SET ended_at = :now WHERE writer_id = :writer_id")
RUN_FINISH = text("UPDATE runs SET status = :status, exit_code = :exit_code, ended_at = :end, "
                  "heartbeat_at = :end WHERE run_id = :run_id")


def row(columns, **values):
    """An insert's parameters: every column, None where not given."""
    unknown = set(values) - set(columns)
    if unknown:
        raise TypeError(f"unknown catalog columns {sorted(unknown)}")
    return {c: values.get(c) for c in columns}
