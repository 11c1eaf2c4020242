"""outbox: partner notices pending for the notify worker (no notification rows in the event's transaction)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 17:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before this revision already have their notification rows (the old code wrote
    # them in the event's transaction): false for all of them, so nothing is sent twice.
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notify_pending", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(
            "ix_outbox_notify_pending",
            ["id"],
            unique=False,
            sqlite_where=sa.text("notify_pending = 1"),
            postgresql_where=sa.text("notify_pending = true"),
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_notify_pending",
            sqlite_where=sa.text("notify_pending = 1"),
            postgresql_where=sa.text("notify_pending = true"),
        )
        batch_op.drop_column("notify_pending")
