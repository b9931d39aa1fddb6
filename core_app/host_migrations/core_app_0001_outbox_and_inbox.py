"""The host's tables: the transactional outbox and the receivers' inbox.

Revision ID: core_app_0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_app_0001"
down_revision = None
branch_labels = ("core_app",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "core_app_outbox",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_core_app_outbox")),
    )
    op.create_index(
        "ix_core_app_outbox_queue_created_at", "core_app_outbox", ["queue", "created_at"]
    )
    op.create_table(
        "core_app_inbox",
        sa.Column("consumer", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name=op.f("pk_core_app_inbox")),
    )


def downgrade() -> None:
    op.drop_table("core_app_inbox")
    op.drop_index("ix_core_app_outbox_queue_created_at", table_name="core_app_outbox")
    op.drop_table("core_app_outbox")
