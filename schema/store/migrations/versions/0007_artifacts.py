"""Store format 7: artifacts (checkpoints, SavedModels, files) as versions with files.

Revision ID: 0007
Revises: 0006

Two catalog tables: `artifact_versions` (one row per logged version of a run's artifact: name,
version number, type, aliases, metadata, step, time) and `artifact_files` (its files: path in
the artifact, sha256 of the whole file, size) and `artifact_chunks` (a large file's chunks in
order: file sha256, seq, chunk sha256, size). The bytes are content-addressed blobs under
`data/artifacts/<ab>/<sha256>` of the data location: a small file's whole bytes, or a large
file's chunks, each stored once per store. No data file is rewritten; a format-6
reader would not see artifacts, hence the new version.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "artifact_versions",
        sa.Column("version_id", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("writer_id", sa.Integer, sa.ForeignKey("writers.writer_id")),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("aliases_json", sa.Text, nullable=False),
        sa.Column("metadata_json", sa.Text, nullable=False),
        sa.Column("step", sa.BigInteger),
        sa.Column("wall_time", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("run_id", "name", "version",
                            name="uq_artifact_versions_run_name_version"),
        sa.UniqueConstraint("token", name="uq_artifact_versions_token"))
    op.create_index("ix_artifact_versions_run_id", "artifact_versions", ["run_id"])
    op.create_table(
        "artifact_files",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("artifact_versions.version_id"),
                  primary_key=True),
        sa.Column("path", sa.String(1024), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False))
    op.create_index("ix_artifact_files_sha256", "artifact_files", ["sha256"])
    op.create_table(
        "artifact_chunks",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("chunk_sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False))
    op.create_index("ix_artifact_chunks_chunk_sha256", "artifact_chunks", ["chunk_sha256"])
    op.get_bind().execute(sa.text("UPDATE meta SET value = '7' WHERE key = 'format_version'"))


def downgrade():
    raise NotImplementedError("tfblackbox stores are upgraded, never downgraded; the catalog "
                              "backup taken before the upgrade is the way back")
