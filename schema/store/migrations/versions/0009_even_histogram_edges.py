"""Store format 9: a histogram's evenly spaced edges are kept as their two ends.

Revision ID: 0009
Revises: 0008

TensorBoard makes a TF2 histogram's edges with tf.linspace, so a segment written by format 9
keeps the `bucket_limits` of a row whose edges that arithmetic gives back bit for bit as its
last edge alone (its first left edge is kept already, format 8), and Store.read puts the list
back (schema/codecs/histogram_edges.py). A format-8 reader would take the cut list for the
whole one, hence the new version. Nothing in the catalog changes and no data file is
rewritten: the lists of older segments read as they are.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    op.get_bind().execute(sa.text("UPDATE meta SET value = '9' WHERE key = 'format_version'"))


def downgrade():
    raise NotImplementedError("tfblackbox stores are upgraded, never downgraded; the catalog "
                              "backup taken before the upgrade is the way back")
