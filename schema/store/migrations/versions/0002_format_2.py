"""Store format 2: unique attempt numbers per run; one dtype vocabulary.

Revision ID: 0002
Revises: 0001

- writers gets UNIQUE (run_id, attempt). Format 1 gave processes that started the same run
  at once the same attempt number; such duplicates (all but the first) are renumbered after
  the run's last attempt, with first_step cleared: their rows carry the old number, which
  stays with the first writer, so readers treat those rows exactly as before.
- The tensors table named dtypes "DT_FLOAT" while debug_tensors said "float32"; both now use
  tf.DType names. Its segments are rewritten in `prepare`, before the transaction (new file
  first, wherever the store keeps its data), the catalog entries swapped in this transaction,
  the old files deleted after the commit (schema/store/migrate.py).
"""

import hashlib

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


def prepare(catalog, data, files):
    """Writes the tensors segments whose dtypes change under new names; returns
    {segment_id: (old path, old sha256, new path, size, new sha256)}. No transaction is open
    while it reads and writes files: the segment list is read first, in its own."""
    from tfblackbox.schema.store import segments
    from tfblackbox.schema.formats import dtypes
    segs = catalog.read(lambda s: list(s.execute(sa.text(
        "SELECT segment_id, run_id, path, sha256 FROM segments "
        "WHERE table_name = 'tensors'"))))
    out = {}
    for segment_id, run_id, rel, sha in segs:
        table = pq.read_table(pa.BufferReader(data.read_bytes(rel)))
        old = table["dtype"].to_pylist()
        new = [dtypes.from_enum_name(d) if d is not None else None for d in old]
        if new == old:
            continue
        table = table.set_column(table.schema.get_field_index("dtype"), "dtype",
                                 pa.array(new, pa.string()))
        table, blob = segments.encode(table, "tensors")
        new_rel = f"{segments.segment_dir('tensors', run_id)}/{segments.file_name('m')}"
        files.write(new_rel, blob)
        out[segment_id] = (rel, sha, new_rel, len(blob), hashlib.sha256(blob).hexdigest())
    return out


def _rename_tensor_dtypes(conn):
    files = context.config.attributes["files"]
    prepared = context.config.attributes["prepared"].get(revision, {})
    for segment_id, (rel, sha, new_rel, size, new_sha) in prepared.items():
        done = conn.execute(sa.text(
            "UPDATE segments SET path = :p, size_bytes = :n, sha256 = :h "
            "WHERE segment_id = :s AND path = :old AND sha256 = :oldh"),
            {"p": new_rel, "n": size, "h": new_sha, "s": segment_id, "old": rel, "oldh": sha})
        if done.rowcount != 1:
            raise RuntimeError(f"tensors segment {rel} changed while the store was upgraded; "
                               f"open the store again to upgrade it")
        files.used(new_rel, rel)


def downgrade():
    raise NotImplementedError("tfblackbox stores are upgraded, never downgraded; the catalog "
                              "backup taken before the upgrade is the way back")
