"""Faults on both brokers: a worker killed mid-task, the broker restarted with tasks
queued, the broker down.

Everything is a real process: the session's redis-server (append-only) or its private
RabbitMQ node (``faultkit.broker``), workers started with ``python run.py worker PLUGIN``
and the Werkzeug server of ``python run.py``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from faultkit import Broker, broker_fixture  # noqa: F401 (the broker fixture)
from procs import (
    WORKER_ARGS,
    Proc,
    Web,
    clean_env,
    elapsed,
    run_py,
    wait_for,
    worker,
    write_plugin_dist,
)

from core_app import send_task

#: A throwaway plugin with a slow, idempotent-enough task that keeps a journal.
SLOW_TASKS = """\
import os
import time

from celery import shared_task


@shared_task(name="slowpoke.sleep")
def sleep(seconds, journal, token):
    with open(journal, "a") as out:
        out.write(f"start {token} {os.getpid()} {time.time()}\\n")
    time.sleep(seconds)
    with open(journal, "a") as out:
        out.write(f"done {token} {os.getpid()}\\n")
    return token
"""

VISIBILITY_TIMEOUT = 3


@pytest.fixture(scope="module")
def slowpoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding the installed-looking ``slowpoke`` plugin (for PYTHONPATH)."""
    root = tmp_path_factory.mktemp("slowpoke-site")
    return write_plugin_dist(root, "slowpoke", {"tasks.py": SLOW_TASKS})


def slow_env(broker: Broker, slowpoke: Path, instance: Path) -> dict[str, str]:
    env = clean_env(
        **broker.env(),
        CORE_APP_INSTANCE_PATH=str(instance),
        CORE_APP_VISIBILITY_TIMEOUT=VISIBILITY_TIMEOUT,
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(slowpoke), env.get("PYTHONPATH")]))
    return env


def send_slow(app, seconds: float, journal: Path, token: str):
    """Queue slowpoke.sleep; the test process does not have the plugin, so name its queue."""
    celery = app.extensions["celery"]
    return celery.send_task(
        "slowpoke.sleep",
        kwargs={"seconds": seconds, "journal": str(journal), "token": token},
        queue="slowpoke",
    )


def journal_lines(journal: Path, kind: str, token: str) -> list[int]:
    """Process ids of the journal's ``kind`` (start/done) lines for ``token``."""
    if not journal.exists():
        return []
    return [
        int(pid)
        for line in journal.read_text().splitlines()
        for what, tok, pid, *_ in [line.split()]
        if what == kind and tok == token
    ]


def test_task_of_a_killed_pool_process_is_delivered_again(broker, make_app, slowpoke, tmp_path):
    journal = tmp_path / "journal"
    proc = worker("slowpoke", slow_env(broker, slowpoke, tmp_path / "w"), tmp_path / "w.log")
    try:
        result = send_slow(make_app(**broker.config()), 1.5, journal, "t1")
        [child] = wait_for(lambda: journal_lines(journal, "start", "t1"))
        assert child != proc.pid, "the task runs in a prefork child, not the main process"
        os.kill(child, signal.SIGKILL)
        wait_for(lambda: result.state == "SUCCESS", timeout=30)
        assert result.result == "t1"
        starts = journal_lines(journal, "start", "t1")
        assert len(starts) == 2 and starts[0] == child and starts[1] != child
        assert journal_lines(journal, "done", "t1") == [starts[1]]
    finally:
        proc.stop()
    print(proc.tail())


def test_task_of_a_killed_worker_is_delivered_to_the_next_worker(
    broker, make_app, slowpoke, tmp_path
):
    journal = tmp_path / "journal"
    env = slow_env(broker, slowpoke, tmp_path / "w")
    first = worker("slowpoke", env, tmp_path / "w1.log")
    try:
        result = send_slow(make_app(**broker.config()), 1.0, journal, "t2")
        [child] = wait_for(lambda: journal_lines(journal, "start", "t2"))
        delivered = time.monotonic()
        first.kill_group()  # SIGKILL the main process and its pool: nothing can ack
    finally:
        first.stop()
    if broker.kind == "redis":
        assert broker.waiting("slowpoke") == 0 and broker.held("slowpoke") == 1, "held"
        # Redis hands the message out again once the visibility timeout has passed; a
        # worker starting after that takes it when it starts polling.
        time.sleep(max(0.0, VISIBILITY_TIMEOUT + 0.5 - elapsed(delivered)))
    else:  # RabbitMQ puts it back the moment the dead worker's connection closes
        wait_for(lambda: broker.waiting("slowpoke") == 1, timeout=5)
        assert broker.held("slowpoke") == 0
    second = worker("slowpoke", env, tmp_path / "w2.log")
    try:
        wait_for(lambda: result.state == "SUCCESS", timeout=30)
    finally:
        second.stop()
    starts = journal_lines(journal, "start", "t2")
    assert len(starts) == 2 and starts[0] == child
    assert journal_lines(journal, "done", "t2") == [starts[1]]
    assert broker.held("slowpoke") == 0


def notifications_env(broker: Broker, instance: Path, **settings: object) -> dict[str, str]:
    return clean_env(**broker.env(), CORE_APP_INSTANCE_PATH=str(instance), **settings)


def test_queued_tasks_survive_a_broker_restart(broker, make_app, tmp_path):
    app = make_app(**broker.config())
    with app.app_context():
        ids = [
            send_task(
                "notifications.send_email",
                kwargs={"to": f"user{n}@example.com", "subject": f"n{n}", "body": "."},
            ).id
            for n in range(5)
        ]
    assert broker.waiting("notifications") == 5
    # Redis: append-only file, written before the publish returns. RabbitMQ: persistent
    # messages on a durable queue, confirmed once written.
    broker.server.restart()
    assert broker.waiting("notifications") == 5

    instance = tmp_path / "worker"
    proc = worker("notifications", notifications_env(broker, instance), tmp_path / "w.log")
    try:
        celery = app.extensions["celery"]
        wait_for(lambda: all(celery.AsyncResult(i).state == "SUCCESS" for i in ids), timeout=30)
    finally:
        proc.stop()
    assert {path.stem for path in (instance / "outbox").glob("*.eml")} == set(ids)


EMAIL = {"to": "ada@example.com", "subject": "Hello", "body": "Hi."}


def test_web_answers_503_quickly_while_the_broker_is_down_and_recovers(broker, tmp_path):
    web = Web(notifications_env(broker, tmp_path / "web"), tmp_path / "web.log").start()
    try:
        user = web.post("/api/shop/users", json={"name": "Ada", "email": "ada@example.com"})
        assert user.status_code == 201
        first = web.post_email()  # the web process holds connections to the broker now

        broker.server.stop()
        try:
            for _ in range(2):  # the first failure must not break the next request
                started = time.monotonic()
                response = web.post("/api/notifications/emails", json=EMAIL)
                took = elapsed(started)
                assert response.status_code == 503, (response.text, web.tail())
                assert took < 3, f"503 after {took:.2f}s"
                assert response.json()["status"] == 503
                assert response.headers["Retry-After"]

            assert web.get("/health").status_code == 200
            if broker.kind == "redis":  # reading a result needs Redis too
                status = web.get(first["status_url"])
                assert status.status_code == 503, status.text
                assert status.json()["status"] == 503
            ready = web.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["broker"]["ok"] is False

            purchase = web.post(
                "/api/shop/purchases",
                json={
                    "user_id": user.json()["id"],
                    "item": "tea",
                    "quantity": 2,
                    "price_cents": 350,
                },
            )
            assert purchase.status_code == 201, purchase.text
            # In the purchase's transaction (the outbox): sent once the broker is back.
            assert purchase.json()["receipt"]["status"] == "queued"
        finally:
            broker.server.start()

        queued = web.post_email()  # the same web process, no restart
        assert web.get(queued["status_url"]).json()["state"] == "PENDING"
        assert broker.waiting("notifications") == 2  # with the first one
        assert web.get("/ready").status_code == 200
    finally:
        web.stop()


def test_a_worker_started_while_the_broker_is_down_waits_and_connects(broker, make_app, tmp_path):
    broker.server.stop()
    try:
        waiting = Proc(
            run_py("worker", "notifications", *WORKER_ARGS),
            notifications_env(broker, tmp_path / "worker"),
            tmp_path / "waiting.log",
        ).start(f"Cannot connect to {broker.kind}")
        time.sleep(1)
        assert not waiting.exited(), waiting.tail()
    finally:
        broker.server.start()
    try:
        wait_for(lambda: " ready." in waiting.output(), timeout=60)
        with make_app(**broker.config()).app_context():
            result = send_task("notifications.send_email", kwargs=EMAIL)
        assert result.get(timeout=30)["to"] == EMAIL["to"]
    finally:
        waiting.stop()
