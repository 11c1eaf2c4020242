"""possible duplicates, server-side web sessions, sign-in lockout

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 08:44:19.690935
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_web_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("id_hash", name=op.f("pk_web_sessions")),
    )
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "possible_duplicates",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subject_id", sa.String(length=36), nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("earlier_subject_id", sa.String(length=36), nullable=False),
        sa.Column("earlier_referral_id", sa.String(length=36), nullable=False),
        sa.Column("matched_on", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=36), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["earlier_referral_id"], ["referrals.id"], name=op.f("fk_possible_duplicates_earlier_referral_id_referrals")
        ),
        sa.ForeignKeyConstraint(
            ["earlier_subject_id"], ["subjects.id"], name=op.f("fk_possible_duplicates_earlier_subject_id_subjects")
        ),
        sa.ForeignKeyConstraint(
            ["referral_id"], ["referrals.id"], name=op.f("fk_possible_duplicates_referral_id_referrals")
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_possible_duplicates_subject_id_subjects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_possible_duplicates")),
        sa.UniqueConstraint("subject_id", "earlier_subject_id", name="uq_possible_duplicates_pair"),
    )
    with op.batch_alter_table("possible_duplicates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_possible_duplicates_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_possible_duplicates_earlier_subject_id"), ["earlier_subject_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_possible_duplicates_referral_id"), ["referral_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_possible_duplicates_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_possible_duplicates_subject_id"), ["subject_id"], unique=False)

    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("person_id", sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f("ix_subjects_person_id"), ["person_id"], unique=False)

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_logins", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("locked_until")
        batch_op.drop_column("failed_logins")

    with op.batch_alter_table("subjects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subjects_person_id"))
        batch_op.drop_column("person_id")

    with op.batch_alter_table("possible_duplicates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_possible_duplicates_subject_id"))
        batch_op.drop_index(batch_op.f("ix_possible_duplicates_status"))
        batch_op.drop_index(batch_op.f("ix_possible_duplicates_referral_id"))
        batch_op.drop_index(batch_op.f("ix_possible_duplicates_earlier_subject_id"))
        batch_op.drop_index(batch_op.f("ix_possible_duplicates_created_at"))

    op.drop_table("possible_duplicates")
    with op.batch_alter_table("web_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_sessions_user_id"))

    op.drop_table("web_sessions")
