"""A busy worker survives Redis restarts, and no task waits for the visibility timeout.

With kombu's own Redis transport, ``python run.py worker notifications --concurrency 2``
exited (``Unrecoverable error: AttributeError("'NoneType' object has no attribute
'hostname'")``) when Redis restarted while it held unacknowledged messages, and the
messages it held waited in Redis for the visibility timeout (core_app.redis_transport).
"""

from __future__ import annotations

import json
import time

import pytest
from faultkit import Publisher, client_app, email_worker_env, smtp_sink
from procs import clean_env, wait_for, worker

from core_app.servers import RedisServer

pytestmark = pytest.mark.faults

EMAILS = 500
RESTARTS = 3


def test_a_busy_worker_survives_three_redis_restarts_and_sends_every_email(tmp_path):
    redis_server = RedisServer(tmp_path / "redis").start()
    with smtp_sink() as (sink, smtp_url):
        env = email_worker_env(redis_server.url, tmp_path / "worker", smtp_url)
        proc = worker("notifications", env, tmp_path / "worker.log", "--concurrency", "2")
        publisher = Publisher(client_app(redis_server.url, tmp_path / "client"), EMAILS, 0.005)
        try:
            publisher.start()
            for _ in range(RESTARTS):
                # Restart while the worker is busy: some emails sent, more queued.
                sent = len(sink.received)
                wait_for(lambda n=sent + 40: proc.exited() or len(sink.received) >= n, 60)
                assert not proc.exited(), proc.tail()
                redis_server.restart()
            publisher.join(timeout=120)
            published = set(publisher.published)
            assert len(published) == EMAILS
            wait_for(lambda: published <= set(sink.task_ids()), timeout=60)
            assert not proc.exited(), proc.tail()
        finally:
            proc.stop()
            redis_server.stop()
            missing = sorted(set(publisher.published) - set(sink.task_ids()))
            (tmp_path / "missing.json").write_text(json.dumps(missing))
    log = proc.output()
    assert "Unrecoverable error" not in log
    assert log.count("Connection to broker lost") >= RESTARTS, "every restart was seen"
    stalled = published - set(sink.task_ids())
    duplicates = len(sink.task_ids()) - len(set(sink.task_ids()))
    print(f"arrived {len(published) - len(stalled)}/{EMAILS}, duplicates {duplicates}")
    assert not stalled
    redis = redis_server.start().client()
    try:
        assert redis.hlen("unacked") == 0 and redis.llen("notifications") == 0
    finally:
        redis_server.stop()


def test_a_worker_restart_waits_for_no_timeout(tmp_path):
    """Redis down for a while (longer than the worker's first reconnect attempts)."""
    redis_server = RedisServer(tmp_path / "redis").start()
    with smtp_sink(delay=0.05) as (sink, smtp_url):
        env = clean_env(
            CORE_APP_BROKER_URL=redis_server.url,
            CORE_APP_INSTANCE_PATH=str(tmp_path / "worker"),
            CORE_APP_NOTIFICATIONS_SMTP_URL=smtp_url,
        )
        proc = worker("notifications", env, tmp_path / "worker.log", "--concurrency", "2")
        publisher = Publisher(client_app(redis_server.url, tmp_path / "client"), 60)
        try:
            publisher.run()  # all queued before the outage
            wait_for(lambda: len(sink.received) >= 10, timeout=30)
            redis_server.stop()
            time.sleep(5)
            redis_server.start()
            published = set(publisher.published)
            wait_for(lambda: published <= set(sink.task_ids()), timeout=60)
            assert not proc.exited(), proc.tail()
        finally:
            proc.stop()
            redis_server.stop()
    assert "unacknowledged message(s) wait for this worker to reconnect" in proc.output()
