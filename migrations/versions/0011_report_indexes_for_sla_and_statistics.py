"""covering indexes for the SLA report and the statistics

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 20:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A year of 100,000 referrals (bench/pages.py): the reports read every column they group or measure
    # from these indexes instead of the wide rows (sealed fields), and the SLA percentiles get their
    # rows already in the (risk level, partner) order they group by. On PostgreSQL (EXPLAIN ANALYZE,
    # after VACUUM): percentiles 183 -> 82 ms, open cases 47 -> 6 ms, statistics by district 208 -> 112 ms.
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_assignments_sla",
            [
                "risk_level",
                "partner_id",
                "offered_at",
                "status",
                "decline_reason",
                "responded_at",
                "first_followup_at",
            ],
            unique=False,
        )
        batch_op.create_index(
            "ix_assignments_status_partner_risk", ["status", "partner_id", "risk_level"], unique=False
        )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.create_index(
            "ix_referrals_statistics", ["created_at", "subject_id", "risk_level", "status"], unique=False
        )
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.create_index(
            "ix_subjects_statistics", ["id", "province", "district", "stat_sex", "stat_age_band"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.drop_index("ix_subjects_statistics")
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_index("ix_referrals_statistics")
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_index("ix_assignments_status_partner_risk")
        batch_op.drop_index("ix_assignments_sla")
