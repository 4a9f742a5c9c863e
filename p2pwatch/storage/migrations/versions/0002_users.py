"""Web accounts (issue 14): ``users`` (name, role, argon2id hash, disabled) and ``case_members`` (which staff
account may open which case).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("last_signin_at", sa.DateTime(timezone=False), nullable=True),
        sa.CheckConstraint("role IN ('staff', 'investigator', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "case_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=False), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_case_members_case_id_cases"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_case_members_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_members")),
        sa.UniqueConstraint("case_id", "user_id", name=op.f("uq_case_members_case_id_user_id")),
    )
    op.create_index("ix_case_members_user_id", "case_members", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_case_members_user_id", "case_members")
    op.drop_table("case_members")
    op.drop_table("users")
