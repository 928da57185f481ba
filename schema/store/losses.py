"""The catalog's record of rows an attempt recorded but never stored (format 5): one `losses`
row per (attempt, table, reason), with the rows, their bytes in memory and their steps.

The recorder's writer keeps the totals of its attempt and writes them whole each time
(`note_losses`), so a retry after a lost answer, or the same totals noted again, change
nothing. These are bound as methods of Store (`store.note_losses(...)`), so `self` is a
Store.
"""

import time

from . import catalog as cat
from .records import loss_record

# "max_bytes": artifact versions skipped past init(max_artifact_bytes=...); "failed": artifact
# versions that could not be stored (a full disk), none of them registered
LOSS_REASONS = ("memory", "finish", "max_bytes", "failed")


def note_losses(self, run_id, writer_id, totals):
    """Records the totals of attempt `writer_id`: {(table, reason): (rows, bytes, first_step,
    last_step)}; a pair already recorded takes the new totals (they only grow)."""
    for _table, reason in totals:
        if reason not in LOSS_REASONS:
            raise ValueError(f"loss reason {reason!r} is unknown; expected one of "
                             f"{', '.join(LOSS_REASONS)}")
    now = time.time()

    def note(s):
        have = {(r.table_name, r.reason): r for r in s.scalars(cat.select(cat.LossRow).where(
            cat.LossRow.writer_id == writer_id))}
        for (table, reason), (rows, nbytes, lo, hi) in totals.items():
            row = have.get((table, reason))
            if row is None:
                s.add(cat.LossRow(run_id=run_id, writer_id=writer_id, table_name=table,
                                  reason=reason, rows=int(rows), bytes=int(nbytes),
                                  first_step=lo, last_step=hi, updated_at=now))
            elif (row.rows, row.bytes, row.first_step, row.last_step) != (rows, nbytes, lo, hi):
                row.rows, row.bytes = max(row.rows, int(rows)), max(row.bytes, int(nbytes))
                row.first_step, row.last_step, row.updated_at = lo, hi, now
    if totals:
        self.catalog.transact(note)


def losses(self, run_id):
    """The run's losses (LossRecord), by attempt, then table and reason; [] if none."""
    def read(s):
        q = cat.select(cat.LossRow, cat.WriterRow.attempt).join(
            cat.WriterRow, cat.WriterRow.writer_id == cat.LossRow.writer_id).where(
            cat.LossRow.run_id == run_id).order_by(cat.WriterRow.attempt,
                                                   cat.LossRow.table_name, cat.LossRow.reason)
        return [loss_record(row, attempt) for row, attempt in s.execute(q)]
    return self.catalog.read(read)
