"""Store format 4: a catalog table of the black-box triggers that fired.

Revision ID: 0004
Revises: 0003

DumpHook's ring mode keeps the last dumped steps in memory and writes them to the store only
when a trigger fires (a NaN, an exception, a signal, a loss spike, a callable of the user's).
Which trigger fired, why, at which step and which dumped steps it wrote is what a reader of
such a run needs first, so each firing is a row of the new `triggers` table (shown by
`tfblackbox show`), tied to the run and the attempt (writer) that recorded it. Nothing else
changes and no data file is rewritten; a format-3 reader would not see the triggers, hence
the new version.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "triggers",
        sa.Column("trigger_id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("writer_id", sa.Integer, sa.ForeignKey("writers.writer_id")),
        sa.Column("step", sa.Integer),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("fired_at", sa.Float, nullable=False),
        sa.Column("first_step", sa.Integer), sa.Column("last_step", sa.Integer),
        sa.Column("steps_written", sa.Integer, nullable=False))
    op.create_index("ix_triggers_run_id", "triggers", ["run_id"])
    op.get_bind().execute(sa.text("UPDATE meta SET value = '4' WHERE key = 'format_version'"))


def downgrade():
    raise NotImplementedError("tfblackbox stores are upgraded, never downgraded; the catalog "
                              "backup taken before the upgrade is the way back")
