"""Store format 2: unique attempt numbers per run; one dtype vocabulary.

Revision ID: 0002
Revises: 0001

- writers gets UNIQUE (run_id, attempt). Format 1 gave processes that started the same run
  at once the same attempt number; such duplicates (all but the first) are renumbered after
  the run's last attempt, with first_step cleared: their rows carry the old number, which
  stays with the first writer, so readers treat those rows exactly as before.
- The tensors table named dtypes "DT_FLOAT" while debug_tensors said "float32"; both now use
  tf.DType names. Its segments are rewritten (new file first, catalog swap in this
  transaction, old file deleted after the commit).
"""

import hashlib
import os

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    conn = op.get_bind()
    _renumber_duplicate_attempts(conn)
    with op.batch_alter_table("writers") as batch:
        batch.create_unique_constraint("uq_writers_run_attempt", ["run_id", "attempt"])
    _rename_tensor_dtypes(conn)
    conn.execute(sa.text("UPDATE meta SET value = '2' WHERE key = 'format_version'"))


def _renumber_duplicate_attempts(conn):
    rows = conn.execute(sa.text(
        "SELECT writer_id, run_id, attempt FROM writers ORDER BY run_id, attempt, writer_id"))
    top, seen = {}, set()
    rows = list(rows)
    for _w, run_id, attempt in rows:
        top[run_id] = max(top.get(run_id, 0), attempt)
    for writer_id, run_id, attempt in rows:
        if (run_id, attempt) not in seen:
            seen.add((run_id, attempt))
            continue
        top[run_id] += 1
        conn.execute(sa.text(
            "UPDATE writers SET attempt = :new, first_step = NULL, error = COALESCE(error || "
            "'; ', '') || :why WHERE writer_id = :w"),
            {"new": top[run_id], "w": writer_id,
             "why": f"attempt renumbered from {attempt} by the format 2 upgrade: it started "
                    f"at the same time as another process of this run; its rows keep number "
                    f"{attempt}"})


def _rename_tensor_dtypes(conn):
    from tfblackbox.schema import segments
    from tfblackbox.schema.formats import dtypes
    from tfblackbox.schema.formats.files import write_durably
    root = context.config.attributes["store_root"]
    after = context.config.attributes["after_commit"]
    segs = conn.execute(sa.text(
        "SELECT segment_id, run_id, path FROM segments WHERE table_name = 'tensors'"))
    for segment_id, run_id, rel in list(segs):
        table = pq.read_table(os.path.join(root, rel))
        old = table["dtype"].to_pylist()
        new = [dtypes.from_enum_name(d) if d is not None else None for d in old]
        if new == old:
            continue
        table = table.set_column(table.schema.get_field_index("dtype"), "dtype",
                                 pa.array(new, pa.string()))
        table, data = segments.encode(table, "tensors")
        new_rel = f"{segments.segment_dir('tensors', run_id)}/{segments.file_name('m')}"
        write_durably(os.path.join(root, new_rel), data)
        conn.execute(sa.text(
            "UPDATE segments SET path = :p, size_bytes = :n, sha256 = :h WHERE segment_id = :s"),
            {"p": new_rel, "n": len(data), "h": hashlib.sha256(data).hexdigest(),
             "s": segment_id})
        after.append(lambda full=os.path.join(root, rel): _remove(full))


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def downgrade():
    raise NotImplementedError("tfblackbox stores are upgraded, never downgraded; the catalog "
                              "backup taken before the upgrade is the way back")
