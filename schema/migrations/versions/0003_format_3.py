"""Store format 3: dumped tensors encoded against earlier dumps of the same watch.

Revision ID: 0003
Revises: 0002

debug_tensors gains content_at, codec, content, chain_run, chain_step and chain_pos
(schema/dump_codec.py): since format 3 its `event` column holds the dump Event
without its tensor_content when `codec` is set, which a format-2 reader would take for the
whole Event; hence the new version. Rows of older segments keep their whole Event (codec
null), which every reader takes as it is: their segments are rewritten with the new columns
as nulls, so every registered file has the table's schema (compaction merges old and new
files). Each file is written new, swapped in the catalog in this transaction and the old one
deleted after the commit.
"""

import hashlib
import os

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    _add_codec_columns(op.get_bind())
    op.get_bind().execute(sa.text("UPDATE meta SET value = '3' WHERE key = 'format_version'"))


def _add_codec_columns(conn):
    from tfblackbox.schema import segments
    from tfblackbox.schema.dumps import DEBUG_TENSORS
    from tfblackbox.schema.formats.files import write_durably
    root = context.config.attributes["store_root"]
    after = context.config.attributes["after_commit"]
    segs = conn.execute(sa.text(
        "SELECT segment_id, run_id, path FROM segments WHERE table_name = 'debug_tensors'"))
    for segment_id, run_id, rel in list(segs):
        table = pq.read_table(os.path.join(root, rel))
        missing = [f for f in DEBUG_TENSORS if f.name not in table.column_names]
        if not missing:
            continue
        for field in missing:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        table, data = segments.encode(table.select(DEBUG_TENSORS.names), "debug_tensors")
        new_rel = f"{segments.segment_dir('debug_tensors', run_id)}/{segments.file_name('m')}"
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
