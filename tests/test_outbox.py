"""The transactional outbox: a task queued in a database transaction is published after
the commit, or by a worker of its queue once the broker is back; the receiver runs each
message id once (core_app.inbox)."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
from fakes import config
from faultkit import smtp_sink
from procs import Proc, clean_env, wait_for, worker
from sqlalchemy import func, select, update

from core_app import TaskUnavailable, create_app
from core_app.db import current_database, session
from core_app.inbox import claim, finish, release
from core_app.outbox import enqueue, inbox, outbox, relay_once
from core_app.servers import RedisServer, free_port, wait_until

EMAIL = {"to": "ann@example.org", "subject": "Hi", "body": "."}


@pytest.fixture
def broker(tmp_path):
    """A redis-server of this test's own, which it may stop and start again."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def _app(tmp_path, url, broker_url):
    return create_app(
        config(
            tmp_path,
            ["shop", "notifications"],
            PLUGIN_ERRORS="raise",
            DATABASE_URL=url,
            BROKER_URL=broker_url,
        )
    )


def _rows(app, table=outbox):
    with current_database(app).engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar()


def _purchase(client, user_id=1):
    return client.post(
        "/api/shop/purchases",
        json={"user_id": user_id, "item": "tea", "quantity": 1, "price_cents": 350},
    )


def test_a_message_is_published_after_the_commit_and_its_row_deleted(
    tmp_path, database_url, broker
):
    app = _app(tmp_path, database_url, broker.url)
    client = app.test_client()
    assert client.post("/api/shop/users", json={"name": "Ann", "email": "ann@example.org"})
    answer = _purchase(client)
    assert answer.status_code == 201
    task_id = answer.json["receipt"]["task_id"]
    queued = broker.client().lrange("notifications", 0, -1)
    assert len(queued) == 1 and task_id.encode() in queued[0]
    wait_until(lambda: _rows(app) == 0, timeout=10)  # deleted off the request's path


def test_a_rolled_back_transaction_publishes_nothing(tmp_path, database_url, broker):
    app = _app(tmp_path, database_url, broker.url)
    with app.app_context():
        enqueue(session(), "notifications.send_email", kwargs=EMAIL)
        session().rollback()
        session().commit()
    assert broker.client().llen("notifications") == 0
    assert _rows(app) == 0


def test_an_unknown_task_is_refused_before_anything_is_written(tmp_path, broker):
    app = _app(tmp_path, None, broker.url)
    with app.app_context(), pytest.raises(TaskUnavailable):
        enqueue(session(), "nobody.nothing")
    assert _rows(app) == 0


def test_with_the_broker_down_the_row_waits_for_the_relay_of_its_queue(
    tmp_path, database_url, broker
):
    app = _app(tmp_path, database_url, broker.url)
    client = app.test_client()
    client.post("/api/shop/users", json={"name": "Ann", "email": "ann@example.org"})
    broker.stop()
    started = time.monotonic()
    answers = [_purchase(client) for _ in range(10)]
    assert [a.status_code for a in answers] == [201] * 10
    assert {a.json["receipt"]["status"] for a in answers} == {"queued"}
    assert time.monotonic() - started < 8, "after one failure the web leaves it to the relay"
    assert _rows(app) == 10
    assert relay_once(app, ["notifications"], grace=0) == 0  # still down: nothing lost
    assert _rows(app) == 10
    broker.start()
    assert relay_once(app, ["shop"], grace=0) == 0  # another queue's worker leaves them
    assert relay_once(app, ["notifications"], grace=0) == 10
    assert _rows(app) == 0
    queued = b"".join(broker.client().lrange("notifications", 0, -1))
    assert all(a.json["receipt"]["task_id"].encode() in queued for a in answers)


def test_once_claims_a_message_id_for_one_delivery_at_a_time(tmp_path, database_url, monkeypatch):
    app = _app(tmp_path, database_url, None)
    key = ("notifications.send_email", "id-1")
    with app.app_context():
        assert claim(key, 0)
        assert not claim(key, 0)  # a duplicate while the first runs
        # The broker hands a message out again only once its holder is gone.
        assert claim(key, 0, redelivered=True)
        assert claim(key, 1)  # the first's retry (one more retry) takes it over
        finish(key)
        assert not claim(key, 2)  # done: never again
        assert not claim(key, 2, redelivered=True)
        other = ("notifications.send_email", "id-2")
        assert claim(other, 0)
        release(other)  # failed for good: a later delivery may try again
        assert claim(other, 0)
        # A claim older than the task time limit belongs to a worker that died.
        past = datetime.now(UTC) - timedelta(hours=1)
        with current_database().engine.begin() as connection:
            connection.execute(update(inbox).values(updated_at=past))
        assert claim(other, 0)


@pytest.mark.timeout(300)
def test_with_the_broker_down_100_purchases_answer_201_and_100_receipts_arrive_once(
    tmp_path, database_url, broker
):
    """Done when: two gunicorn workers take 100 purchases while Redis is down (all 201);
    Redis comes back and the notifications worker relays and sends the 100 receipts,
    none twice, while 50 more purchases arrive; nothing is restarted."""
    with smtp_sink() as (sink, smtp_url):
        env = clean_env(
            CORE_APP_BROKER_URL=broker.url,
            CORE_APP_DATABASE_URL=database_url,
            CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"),
            CORE_APP_PLUGINS="shop,notifications",
            CORE_APP_NOTIFICATIONS_SMTP_URL=smtp_url,
            CORE_APP_OUTBOX_RELAY_INTERVAL=0.5,
            CORE_APP_OUTBOX_RELAY_GRACE=1.0,
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gunicorn = [sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class"]
        gunicorn += ["gthread", "--threads", "4", "--bind", f"127.0.0.1:{port}", "run:app"]
        web = Proc(gunicorn, env, tmp_path / "web.log").start(lambda: _healthy(base))
        notifications = worker("notifications", env, tmp_path / "worker.log")
        try:
            user = requests.post(
                f"{base}/api/shop/users", json={"name": "Ann", "email": "ann@example.org"}
            )
            assert user.status_code == 201, user.text
            broker.stop()
            during = _purchases(base, user.json()["id"], 100)
            assert [status for status, _ in during] == [201] * 100
            broker.start()
            after = _purchases(base, user.json()["id"], 50)  # while the relay works
            assert [status for status, _ in after] == [201] * 50
            wanted = {task_id for _, task_id in during + after}
            assert len(wanted) == 150
            wait_for(lambda: wanted <= set(sink.task_ids()), timeout=90)
            time.sleep(2 * 1.0 + 1)  # a relay pass or two more: nothing arrives twice
        finally:
            notifications.stop()
            web.stop()
    arrived = sink.task_ids()
    print(f"{len(set(arrived))} receipts arrived, {len(arrived) - len(set(arrived))} twice")
    assert sorted(arrived) == sorted(wanted)
    assert "relayed" in notifications.output()
    app = create_app(
        config(tmp_path / "check", ["shop", "notifications"], DATABASE_URL=database_url)
    )
    assert _rows(app) == 0
    assert _rows(app, inbox) == 150


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _purchases(base: str, user_id: int, count: int) -> list[tuple[int, str]]:
    """``count`` purchases from 4 client threads; (status, receipt task id) each."""
    local = threading.local()

    def one(_: int) -> tuple[int, str]:
        if not hasattr(local, "http"):
            local.http = requests.Session()
        answer = local.http.post(
            f"{base}/api/shop/purchases",
            json={"user_id": user_id, "item": "tea", "quantity": 1, "price_cents": 350},
            timeout=30,
        )
        receipt = answer.json().get("receipt", {}) if answer.status_code == 201 else {}
        return answer.status_code, receipt.get("task_id", "")

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))
