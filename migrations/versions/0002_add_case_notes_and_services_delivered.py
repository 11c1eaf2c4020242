"""add case notes and services delivered on close

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 02:54:13.346942
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "case_notes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("referral_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("note_ct", sa.LargeBinary(), nullable=True),
        sa.Column("author_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["referral_id"], ["referrals.id"], name=op.f("fk_case_notes_referral_id_referrals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_notes")),
    )
    with op.batch_alter_table("case_notes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_case_notes_referral_id"), ["referral_id"], unique=False)

    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("services_delivered", sa.JSON(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_column("services_delivered")

    with op.batch_alter_table("case_notes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_notes_referral_id"))

    op.drop_table("case_notes")
