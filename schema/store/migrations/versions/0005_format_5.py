"""Store format 5: a catalog table of the rows an attempt recorded but could not store.

Revision ID: 0005
Revises: 0004

When the store's disk is full the recorder's writer keeps the rows it could not write in
memory and retries them, within a bound (`max_unwritten_bytes`); past it, it drops rows (bulk
tables first, the oldest first), and at the end of the attempt whatever is still unwritten is
lost. A reader must see what is missing and why, not a store that merely looks thin, so each
(attempt, table, reason) gets one row of the new `losses` table: rows, their bytes, their
first and last step (shown by `tfblackbox show`, copied by `merge`). Nothing else changes
and no data file is rewritten; a format-4 reader would not see the losses, hence the new
version.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "losses",
        sa.Column("loss_id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("writer_id", sa.Integer, sa.ForeignKey("writers.writer_id"), nullable=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("first_step", sa.BigInteger), sa.Column("last_step", sa.BigInteger),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("writer_id", "table_name", "reason",
                            name="uq_losses_writer_table_reason"))
    op.create_index("ix_losses_run_id", "losses", ["run_id"])
    op.get_bind().execute(sa.text("UPDATE meta SET value = '5' WHERE key = 'format_version'"))


def downgrade():
    raise NotImplementedError("tfblackbox stores are upgraded, never downgraded; the catalog "
                              "backup taken before the upgrade is the way back")
