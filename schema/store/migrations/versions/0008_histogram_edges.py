"""Store format 8: a histogram's left edges that repeat the right edges before them are kept once.

Revision ID: 0008
Revises: 0007

A TF2 histogram's `bucket_lefts` equals its `bucket_limits` shifted by one bucket but for its
first value, so a segment written by format 8 keeps such a row's `bucket_lefts` as that first
value alone, and Store.read puts the list back (schema/codecs/histogram_edges.py): a third of
a histogram's bytes and encoding. A format-7 reader would take the cut list for the whole one,
hence the new version. Nothing in the catalog changes and no data file is rewritten: the
whole lists of older segments read as they are.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.get_bind().execute(sa.text("UPDATE meta SET value = '8' WHERE key = 'format_version'"))


def downgrade():
    raise NotImplementedError("tfblackbox stores are upgraded, never downgraded; the catalog "
                              "backup taken before the upgrade is the way back")
