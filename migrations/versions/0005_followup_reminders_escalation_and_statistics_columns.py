"""follow-up cycle: deadline wake-ups, reminders and escalation; coarse statistics columns of subjects; SLA copies on assignments

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 11:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deadlines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("noticed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("reminders", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_deadlines_wake_at"), ["wake_at"], unique=False)
    # Outstanding deadlines are looked at again: pending ones at due, overdue ones (their one overdue
    # notice counts as the first reminder) at once, for the next reminder or escalation.
    op.execute("UPDATE deadlines SET wake_at = due_at WHERE status = 'pending'")
    op.execute("UPDATE deadlines SET wake_at = due_at, reminders = 1 WHERE status = 'overdue'")

    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stat_age_band", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("stat_sex", sa.String(length=16), nullable=True))

    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("risk_level", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("first_followup_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_assignments_offered_at", ["offered_at"], unique=False)
    op.execute(
        "UPDATE assignments SET risk_level = (SELECT referrals.risk_level FROM referrals"
        " WHERE referrals.id = assignments.referral_id)"
    )
    op.execute(
        "UPDATE assignments SET first_followup_at = (SELECT min(followups.recorded_at) FROM followups"
        " WHERE followups.assignment_id = assignments.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_index("ix_assignments_offered_at")
        batch_op.drop_column("first_followup_at")
        batch_op.drop_column("risk_level")

    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.drop_column("stat_sex")
        batch_op.drop_column("stat_age_band")

    with op.batch_alter_table("deadlines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deadlines_wake_at"))
        batch_op.drop_column("escalated_at")
        batch_op.drop_column("reminders")
        batch_op.drop_column("noticed_at")
        batch_op.drop_column("wake_at")
