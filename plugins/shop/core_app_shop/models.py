"""The shop's tables (``shop_users``, ``shop_purchases``); their migrations are in
``migrations/``, written with ``python run.py db revision shop -m ...``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core_app.db import plugin_metadata

from .constants import MAX_EMAIL_LENGTH, MAX_ITEM_LENGTH, MAX_NAME_LENGTH


class Base(DeclarativeBase):
    metadata = plugin_metadata()


class User(Base):
    __tablename__ = "shop_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    email: Mapped[str] = mapped_column(String(MAX_EMAIL_LENGTH), unique=True)

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "email": self.email}


def _now() -> datetime:
    return datetime.now(UTC)


class Purchase(Base):
    __tablename__ = "shop_purchases"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("shop_users.id"), index=True)
    item: Mapped[str] = mapped_column(String(MAX_ITEM_LENGTH))
    quantity: Mapped[int]
    price_cents: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)

    def as_dict(self) -> dict[str, object]:
        created = self.created_at
        if created.tzinfo is not None:  # PostgreSQL; SQLite keeps UTC without a zone
            created = created.astimezone(UTC).replace(tzinfo=None)
        return {
            "id": self.id,
            "user_id": self.user_id,
            "item": self.item,
            "quantity": self.quantity,
            "price_cents": self.price_cents,
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
