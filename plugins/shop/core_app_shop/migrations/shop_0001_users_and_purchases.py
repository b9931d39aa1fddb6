"""Users and purchases.

Revision ID: shop_0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "shop_0001"
down_revision = None
branch_labels = ("shop",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shop_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_users")),
        sa.UniqueConstraint("email", name=op.f("uq_shop_users_email")),
    )
    op.create_table(
        "shop_purchases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("item", sa.String(200), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["shop_users.id"], name=op.f("fk_shop_purchases_user_id_shop_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_purchases")),
    )
    op.create_index(op.f("ix_shop_purchases_user_id"), "shop_purchases", ["user_id"])
    op.create_index(op.f("ix_shop_purchases_created_at"), "shop_purchases", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_shop_purchases_created_at"), table_name="shop_purchases")
    op.drop_index(op.f("ix_shop_purchases_user_id"), table_name="shop_purchases")
    op.drop_table("shop_purchases")
    op.drop_table("shop_users")
