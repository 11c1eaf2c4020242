"""inbox: each user's last two visits, so the page can show what is new since the last one

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inbox_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("inbox_seen_before", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("inbox_seen_before")
        batch_op.drop_column("inbox_seen_at")
