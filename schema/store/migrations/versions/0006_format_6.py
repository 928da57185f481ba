"""Store format 6: the tfdbg tables named by the glossary (tfdbg v1 / tfdbg v2).

Revision ID: 0006
Revises: 0005

Format 5 called tfdbg v1's tables debug_runs, debug_tensors and debug_graphs and tfdbg v2's
tfdbg2_records and tfdbg2_blobs; everywhere else the code, options and docs say tfdbg v1 / v2.
The catalog's table names (segments, losses) are renamed in one transaction; the data files
stay where they are (each segment row holds its path), new segments go under the new names.
A format-5 reader would look for the old names, hence the new version.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

RENAMED = {"debug_runs": "tfdbg_v1_runs", "debug_tensors": "tfdbg_v1_tensors",
           "debug_graphs": "tfdbg_v1_graphs", "tfdbg2_records": "tfdbg_v2_records",
           "tfdbg2_blobs": "tfdbg_v2_blobs"}


def upgrade():
    bind = op.get_bind()
    for table in ("segments", "losses"):
        for old, new in RENAMED.items():
            bind.execute(sa.text(f"UPDATE {table} SET table_name = :new WHERE table_name = :old"),
                         {"old": old, "new": new})
    bind.execute(sa.text("UPDATE meta SET value = '6' WHERE key = 'format_version'"))


def downgrade():
    raise NotImplementedError("tfblackbox stores are upgraded, never downgraded; the catalog "
                              "backup taken before the upgrade is the way back")
