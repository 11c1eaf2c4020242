"""index of each partner's open assignments, for the router's load counts

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 15:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OPEN = "status IN ('offered', 'accepted')"


def upgrade() -> None:
    # The router counts a partner's open assignments before every offer: an index-only scan of
    # the open ones instead of intersecting the partner's index with every open assignment's.
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_assignments_open_per_partner",
            ["partner_id"],
            unique=False,
            sqlite_where=sa.text(OPEN),
            postgresql_where=sa.text(OPEN),
        )


def downgrade() -> None:
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_assignments_open_per_partner", sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN)
        )
