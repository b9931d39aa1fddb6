"""Celery tasks of the shop (queue 'shop')."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .constants import DAILY_SUMMARY_TASK
from .storage import connect


@shared_task(name=DAILY_SUMMARY_TASK)
def daily_sales_summary(hours: int = 24) -> dict[str, Any]:
    """Totals of the purchases of the last ``hours`` hours (run daily by beat)."""
    with connect() as db:
        row = db.execute(
            "SELECT COUNT(*) AS purchases, COALESCE(SUM(quantity * price_cents), 0) AS cents "
            "FROM purchases WHERE created_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?)",
            (f"-{int(hours)} hours",),
        ).fetchone()
    return {"hours": hours, "purchases": row["purchases"], "total_cents": row["cents"]}
