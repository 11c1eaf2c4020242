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
    # "My referrals" and the status filters read a page in (created_at, id) order. With one-column indexes
    # a page is every row of the caseworker or status, sorted (61,452 closed referrals of 100,000 in
    # bench/pages.py), or a backward walk of created_at filtering; with these, a page is an index range
    # (0.1 ms on PostgreSQL for a caseworker's page).
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index("ix_referrals_caseworker_created", ["caseworker_id", "created_at", "id"], unique=False)
        batch_op.create_index("ix_referrals_status_created", ["status", "created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index("ix_referrals_status_created")
        batch_op.drop_index("ix_referrals_caseworker_created")
