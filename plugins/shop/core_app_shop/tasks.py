"""Celery tasks of the shop (queue 'shop')."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from celery import shared_task
from sqlalchemy import func, select

from core_app.db import session

from .constants import DAILY_SUMMARY_TASK
from .models import Purchase


@shared_task(name=DAILY_SUMMARY_TASK)
def daily_sales_summary(hours: int = 24) -> dict[str, Any]:
    """Totals of the purchases of the last ``hours`` hours (run daily by beat)."""
    since = datetime.now(UTC) - timedelta(hours=int(hours))
    count, cents = (
        session()
        .execute(
            select(
                func.count(Purchase.id),
                func.coalesce(func.sum(Purchase.quantity * Purchase.price_cents), 0),
            ).where(Purchase.created_at >= since)
        )
        .one()
    )
    return {"hours": hours, "purchases": count, "total_cents": int(cents)}
