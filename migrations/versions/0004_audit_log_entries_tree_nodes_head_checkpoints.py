"""audit log: sealed entries, Merkle tree nodes, the tree head and signed checkpoints

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 11:38:48.575989
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_bi", sa.LargeBinary(), nullable=False),
        sa.Column("action_bi", sa.LargeBinary(), nullable=False),
        sa.Column("referral_bi", sa.LargeBinary(), nullable=True),
        sa.Column("subject_bi", sa.LargeBinary(), nullable=True),
        sa.Column("record_ct", sa.LargeBinary(), nullable=False),
        sa.Column("details_key", sa.String(length=16), nullable=False),
        sa.Column("details_ct", sa.LargeBinary(), nullable=False),
        sa.Column("commitment", sa.LargeBinary(), nullable=False),
        sa.Column("idx", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entries")),
        sa.UniqueConstraint("idx", name=op.f("uq_audit_entries_idx")),
    )
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.create_index("ix_audit_entries_action", ["action_bi", "at"], unique=False)
        batch_op.create_index("ix_audit_entries_actor", ["actor_bi", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_entries_at"), ["at"], unique=False)
        batch_op.create_index("ix_audit_entries_referral", ["referral_bi", "at"], unique=False)
        batch_op.create_index("ix_audit_entries_subject", ["subject_bi", "at"], unique=False)
        batch_op.create_index(
            "ix_audit_entries_unsequenced",
            ["at", "id"],
            unique=False,
            postgresql_where=sa.text("idx IS NULL"),
            sqlite_where=sa.text("idx IS NULL"),
        )

    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    # The one head row the integrators lock; the empty tree's root is SHA-256 of nothing (RFC 9162).
    op.bulk_insert(
        sa.table(
            "audit_head",
            sa.column("id", sa.Integer()),
            sa.column("size", sa.BigInteger()),
            sa.column("root", sa.LargeBinary()),
            sa.column("updated_at", sa.DateTime(timezone=True)),
        ),
        [{"id": 1, "size": 0, "root": hashlib.sha256(b"").digest(), "updated_at": datetime.now(UTC)}],
    )
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_audit_nodes")),
    )


def downgrade() -> None:
    op.drop_table("audit_nodes")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_entries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_audit_entries_unsequenced", postgresql_where=sa.text("idx IS NULL"), sqlite_where=sa.text("idx IS NULL")
        )
        batch_op.drop_index("ix_audit_entries_subject")
        batch_op.drop_index("ix_audit_entries_referral")
        batch_op.drop_index(batch_op.f("ix_audit_entries_at"))
        batch_op.drop_index("ix_audit_entries_actor")
        batch_op.drop_index("ix_audit_entries_action")

    op.drop_table("audit_entries")
    op.drop_table("audit_checkpoints")
