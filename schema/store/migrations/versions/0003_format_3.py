"""Store format 3: dumped tensors encoded against earlier dumps of the same watch.

Revision ID: 0003
Revises: 0002

debug_tensors gains content_at, codec, content, chain_run, chain_step and chain_pos
(schema/codecs/tfdbg_v1_codec.py): since format 3 its `event` column holds the dump Event
without its tensor_content when `codec` is set, which a format-2 reader would take for the
whole Event; hence the new version. Rows of older segments keep their whole Event (codec
null), which every reader takes as it is: their segments are rewritten with the new columns
as nulls, so every registered file has the table's schema (compaction merges old and new
files). Each file is written new, swapped in the catalog in this transaction and the old one
deleted after the commit.
"""

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    _swap_rewritten(op.get_bind())
    op.get_bind().execute(sa.text("UPDATE meta SET value = '3' WHERE key = 'format_version'"))


def prepare(catalog, data, files):
    """Writes the debug_tensors segments that lack the codec columns under new names, those
    columns null; returns {segment_id: (old path, old sha256, new path, size, new sha256)}.
    No transaction is open while it reads and writes files."""
    from tfblackbox.schema.store import segments
    from tfblackbox.schema.tables.tfdbg_v1 import TFDBG_V1_TENSORS as DEBUG_TENSORS
    segs = catalog.read(lambda s: list(s.execute(sa.text(
        "SELECT segment_id, run_id, path, sha256 FROM segments "
        "WHERE table_name = 'debug_tensors'"))))
    out = {}
    for segment_id, run_id, rel, sha in segs:
        table = pq.read_table(pa.BufferReader(data.read_bytes(rel)))
        missing = [f for f in DEBUG_TENSORS if f.name not in table.column_names]
        if not missing:
            continue
        for field in missing:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        table, blob = segments.encode(table.select(DEBUG_TENSORS.names), "debug_tensors")
        new_rel = f"{segments.segment_dir('debug_tensors', run_id)}/{segments.file_name('m')}"
        files.write(new_rel, blob)
        out[segment_id] = (rel, sha, new_rel, len(blob), hashlib.sha256(blob).hexdigest())
    return out


def _swap_rewritten(conn):
    files = context.config.attributes["files"]
    prepared = context.config.attributes["prepared"].get(revision, {})
    for segment_id, (rel, sha, new_rel, size, new_sha) in prepared.items():
        done = conn.execute(sa.text(
            "UPDATE segments SET path = :p, size_bytes = :n, sha256 = :h "
            "WHERE segment_id = :s AND path = :old AND sha256 = :oldh"),
            {"p": new_rel, "n": size, "h": new_sha, "s": segment_id, "old": rel, "oldh": sha})
        if done.rowcount != 1:
            raise RuntimeError(f"debug_tensors segment {rel} changed while the store was "
                               f"upgraded; open the store again to upgrade it")
        files.used(new_rel, rel)


def downgrade():
    raise NotImplementedError("tfblackbox stores are upgraded, never downgraded; the catalog "
                              "backup taken before the upgrade is the way back")
