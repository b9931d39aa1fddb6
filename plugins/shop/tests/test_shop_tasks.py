"""The shop's tasks, run by a real worker (core_app's ``core_app_worker`` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core_app import send_task


@pytest.fixture
def core_app_plugins():
    return ["shop", "notifications"]


def test_daily_sales_summary_totals_the_purchases(redis_app, core_app_worker):
    client = redis_app.test_client()
    user = client.post("/api/shop/users", json={"name": "Ada", "email": "ada@example.com"})
    assert user.status_code == 201
    receipts = []
    for item, quantity, price_cents in [("tea", 2, 350), ("cake", 1, 1000)]:
        purchase = client.post(
            "/api/shop/purchases",
            json={
                "user_id": user.json["id"],
                "item": item,
                "quantity": quantity,
                "price_cents": price_cents,
            },
        )
        assert purchase.status_code == 201
        assert purchase.json["receipt"]["status"] == "queued"
        receipts.append(purchase.json["receipt"]["task_id"])

    with redis_app.app_context():
        summary = send_task("shop.daily_sales_summary", kwargs={"hours": 24}, ignore_result=False)
    assert summary.get(timeout=20) == {"hours": 24, "purchases": 2, "total_cents": 1700}

    # The receipts went to the notifications plugin by task name and were sent.
    celery = redis_app.extensions["celery"]
    for number, task_id in enumerate(receipts, start=1):
        sent = celery.AsyncResult(task_id).get(timeout=20)
        eml = (Path(redis_app.instance_path) / "outbox" / sent["file"]).read_text()
        assert f"Subject: Your receipt for purchase #{number}" in eml
        assert sent["to"] == "ada@example.com"


def test_the_summary_of_a_quiet_day_is_zero(redis_app, core_app_worker):
    with redis_app.app_context():
        summary = send_task("shop.daily_sales_summary", ignore_result=False)
    assert summary.get(timeout=20) == {"hours": 24, "purchases": 0, "total_cents": 0}
