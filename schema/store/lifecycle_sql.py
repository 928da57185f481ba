"""The catalog statements of a run's start and end, and of a segment's registration, as
plain SQL.

A process that records or imports one run runs most of these once or twice (the segment's
insert and the heartbeat once a flush). SQLAlchemy compiles a Core or ORM statement the first
time a process runs it, ~1 ms each here, and an ORM flush adds its unit of work: an import's
begin and last commit spent 6-8 ms of CPU each, most of it compiling, against ~0.3 ms to
execute. `text()` statements skip the compiler and run on SQLite and PostgreSQL alike (named
parameters). The ORM models in catalog.py stay the schema: the column lists here are read
from them.
"""

from sqlalchemy import text

from . import catalog as cat


class Insert:
    """An insert of every column of `table` but its generated id, from named parameters."""

    def __init__(self, table, generated=None):
        self.columns = [c.name for c in table.columns if c.name != generated]
        sql = (f"INSERT INTO {table.name} ({', '.join(self.columns)}) "
               f"VALUES ({', '.join(':' + n for n in self.columns)})")
        self.plain = text(sql)
        self.returning = text(f"{sql} RETURNING {generated}") if generated else None

    def new_id(self, s, values):
        """Runs it in session `s`; returns the row's generated id. PostgreSQL says it with
        RETURNING; SQLite (which has RETURNING only from 3.35, and Python may be linked to an
        older one) and others through the cursor's lastrowid."""
        if s.get_bind().dialect.name == "postgresql":
            return s.scalar(self.returning, values)
        return s.execute(self.plain, values).lastrowid


INSERT_RUN = Insert(cat.RunRow.__table__)
INSERT_WRITER = Insert(cat.WriterRow.__table__, generated="writer_id")
INSERT_SEGMENT = Insert(cat.SegmentRow.__table__, generated="segment_id")

RUN_EXISTS = text("SELECT heartbeat_at, pid FROM runs WHERE run_id = :run_id")
LAST_ATTEMPT = text("SELECT max(attempt) FROM writers WHERE run_id = :run_id")
RUN_HEARTBEAT = text("UPDATE runs SET heartbeat_at = :now WHERE run_id = :run_id")
WRITER_FIRST_STEP = text("UPDATE writers SET first_step = :step WHERE writer_id = :writer_id "
                         "AND (first_step IS NULL OR first_step > :step)")
WRITER_DROPPED = text("UPDATE writers SET dropped_rows = :dropped WHERE writer_id = :writer_id "
                      "AND (dropped_rows IS NULL OR dropped_rows < :dropped)")
WRITER_ERROR = text("UPDATE writers SET error = :error WHERE writer_id = :writer_id")
WRITER_END = text("UPDATE writers SET ended_at = :now WHERE writer_id = :writer_id")
RUN_FINISH = text("UPDATE runs SET status = :status, exit_code = :exit_code, ended_at = :end, "
                  "heartbeat_at = :end WHERE run_id = :run_id")


def row(insert, **values):
    """An Insert's parameters: every column, None where not given."""
    unknown = set(values) - set(insert.columns)
    if unknown:
        raise TypeError(f"unknown catalog columns {sorted(unknown)}")
    return {c: values.get(c) for c in insert.columns}
