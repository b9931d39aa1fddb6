"""How long publishing a task takes inside a request, against the whole request.

    CORE_APP_BROKER_URL=redis://127.0.0.1:6379/0 python benchmarks/publish_probe.py

Builds the app from ``CORE_APP_*`` settings, wraps its Celery app's ``send_task`` (what
both ``Task.apply_async`` and ``core_app.send_task`` call) with a timer, and sends
requests through the Flask test client: ``POST /api/notifications/emails``
(``apply_async``) and ``POST /api/shop/purchases`` (``core_app.send_task`` by name).
For comparison, the same message is also published by a bare ``Celery(broker=...)``
app (no result backend), outside any request. Prints JSON: per route, per round, the
publish and request times in seconds, and the bare publish times.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from celery import Celery

from core_app import create_app

EMAIL = {"to": "ann@example.org", "subject": "Hello", "body": "Hi Ann, this is a benchmark."}
PURCHASE = {"user_id": 1, "item": "tea", "quantity": 2, "price_cents": 350}
ROUTES = {
    "POST /api/notifications/emails (apply_async)": ("/api/notifications/emails", EMAIL, 202),
    "POST /api/shop/purchases (core_app.send_task)": ("/api/shop/purchases", PURCHASE, 201),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    app = create_app()
    celery_app = app.extensions["celery"]
    publish_times: list[float] = []
    send_task = celery_app.send_task

    def timed_send_task(*a: Any, **k: Any) -> Any:
        started = time.perf_counter()
        try:
            return send_task(*a, **k)
        finally:
            publish_times.append(time.perf_counter() - started)

    celery_app.send_task = timed_send_task
    client = app.test_client()
    user = {"name": "Ann", "email": "ann@example.org"}
    assert client.post("/api/shop/users", json=user).status_code in (201, 400)

    def one(path: str, body: dict[str, Any], status: int) -> tuple[float, float]:
        before = len(publish_times)
        started = time.perf_counter()
        response = client.post(path, json=body)
        elapsed = time.perf_counter() - started
        if response.status_code != status or len(publish_times) != before + 1:
            raise SystemExit(f"{path} answered {response.status_code}: {response.get_json()}")
        if path.endswith("purchases") and response.get_json()["receipt"]["status"] != "queued":
            raise SystemExit(f"receipt not queued: {response.get_json()}")
        return publish_times[-1], elapsed

    # set_as_current=False: a new current app would take over the plugins' shared_tasks
    broker = os.environ["CORE_APP_BROKER_URL"]
    bare = Celery("bare_publisher", broker=broker, set_as_current=False)

    def bare_publish() -> float:
        started = time.perf_counter()
        bare.send_task("notifications.send_email", kwargs=EMAIL, queue="bench_bare_publish")
        return time.perf_counter() - started

    for path, body, status in ROUTES.values():
        for _ in range(20):
            one(path, body, status)
            bare_publish()
    out: dict[str, Any] = {name: [] for name in ROUTES}
    out["bare"] = []
    names = [*ROUTES, "bare"]
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            if name == "bare":
                out[name].append([bare_publish() for _ in range(args.requests)])
                continue
            path, body, status = ROUTES[name]
            pairs = [one(path, body, status) for _ in range(args.requests)]
            out[name].append({"publish": [p for p, _ in pairs], "request": [r for _, r in pairs]})
    bare.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
