"""indexes in the lists' order per caseworker and per status (newest first)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 18:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "My referrals" and the status filters read a page in (created_at, id) order. With only one-column
    # indexes, PostgreSQL walks the created_at index backwards and filters: for a caseworker whose cases
    # are old, that is most of the table (50 ms of 85 per page with 100,000 referrals, bench/pages.py).
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index("ix_referrals_caseworker_created", ["caseworker_id", "created_at", "id"], unique=False)
        batch_op.create_index("ix_referrals_status_created", ["status", "created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index("ix_referrals_status_created")
        batch_op.drop_index("ix_referrals_caseworker_created")
