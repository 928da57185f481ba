"""Store format 1: runs, writers (attempts), segments, replay cursors, meta.

Revision ID: 0001
Stores made by tfblackbox 0.1 have these tables but no alembic_version; they are stamped
with this revision before they are upgraded (schema/store/migrate.py).
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False))
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(256)), sa.Column("name", sa.String(256)),
        sa.Column("group_name", sa.String(256)), sa.Column("notes", sa.Text),
        sa.Column("status", sa.String(16), nullable=False), sa.Column("exit_code", sa.Integer),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("tags_json", sa.Text, nullable=False),
        sa.Column("host", sa.String(256)), sa.Column("pid", sa.Integer),
        sa.Column("command", sa.Text), sa.Column("python_version", sa.String(64)),
        sa.Column("tf_version", sa.String(64)), sa.Column("tfblackbox_version", sa.String(64)),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("started_at", sa.Float, nullable=False), sa.Column("ended_at", sa.Float),
        sa.Column("heartbeat_at", sa.Float))
    op.create_table(
        "writers",
        sa.Column("writer_id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("host", sa.String(256)), sa.Column("pid", sa.Integer),
        sa.Column("started_at", sa.Float, nullable=False), sa.Column("ended_at", sa.Float),
        sa.Column("first_step", sa.Integer),
        sa.Column("dropped_rows", sa.Integer, nullable=False), sa.Column("error", sa.Text))
    op.create_index("ix_writers_run_id", "writers", ["run_id"])
    op.create_table(
        "cursors",
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("destination", sa.String(256), primary_key=True),
        sa.Column("step", sa.Integer), sa.Column("state_json", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False))
    op.create_table(
        "segments",
        sa.Column("segment_id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("writer_id", sa.Integer, sa.ForeignKey("writers.writer_id")),
        sa.Column("path", sa.String(1024), nullable=False, unique=True),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("min_step", sa.Integer), sa.Column("max_step", sa.Integer),
        sa.Column("created_at", sa.Float, nullable=False))
    op.create_index("ix_segments_run_table", "segments", ["run_id", "table_name"])


def downgrade():
    raise NotImplementedError("tfblackbox stores are upgraded, never downgraded")
