"""A busy worker survives broker restarts, and no task waits for a timeout: on both brokers.

With kombu's own Redis transport, ``python run.py worker notifications --concurrency 2``
exited (``Unrecoverable error: AttributeError("'NoneType' object has no attribute
'hostname'")``) when Redis restarted while it held unacknowledged messages, and the
messages it held waited in Redis for the visibility timeout (core_app.redis_transport).
RabbitMQ returns a lost connection's unacknowledged messages to the queue itself.
"""

from __future__ import annotations

import json
import time

import pytest
from faultkit import Publisher, broker_fixture, client_app, email_worker_env, smtp_sink  # noqa: F401
from procs import wait_for, worker

pytestmark = pytest.mark.faults

EMAILS = 500
RESTARTS = 3


def test_a_busy_worker_survives_three_broker_restarts_and_sends_every_email(broker, tmp_path):
    with smtp_sink() as (sink, smtp_url):
        env = email_worker_env(broker, tmp_path / "worker", smtp_url)
        proc = worker("notifications", env, tmp_path / "worker.log", "--concurrency", "2")
        publisher = Publisher(client_app(broker, tmp_path / "client"), EMAILS, 0.005)
        try:
            publisher.start()
            for _ in range(RESTARTS):
                # Restart while the worker is busy: some emails sent, more queued.
                sent = len(sink.received)
                wait_for(lambda n=sent + 40: proc.exited() or len(sink.received) >= n, 60)
                assert not proc.exited(), proc.tail()
                broker.server.restart()
            publisher.join(timeout=120)
            published = set(publisher.published)
            assert len(published) == EMAILS
            wait_for(lambda: published <= set(sink.task_ids()), timeout=60)
            assert not proc.exited(), proc.tail()
        finally:
            proc.stop()
            missing = sorted(set(publisher.published) - set(sink.task_ids()))
            (tmp_path / "missing.json").write_text(json.dumps(missing))
    log = proc.output()
    assert "Unrecoverable error" not in log
    assert log.count("Connection to broker lost") >= RESTARTS, "every restart was seen"
    stalled = published - set(sink.task_ids())
    duplicates = len(sink.task_ids()) - len(set(sink.task_ids()))
    print(f"{broker}: arrived {len(published) - len(stalled)}/{EMAILS}, duplicates {duplicates}")
    assert not stalled
    assert broker.held("notifications") == 0 and broker.waiting("notifications") == 0


def test_a_worker_restart_waits_for_no_timeout(broker, tmp_path):
    """The broker down for a while (longer than the worker's first reconnect attempts)."""
    with smtp_sink(delay=0.05) as (sink, smtp_url):
        env = email_worker_env(broker, tmp_path / "worker", smtp_url)
        proc = worker("notifications", env, tmp_path / "worker.log", "--concurrency", "2")
        publisher = Publisher(client_app(broker, tmp_path / "client"), 60)
        try:
            publisher.run()  # all queued before the outage
            wait_for(lambda: len(sink.received) >= 10, timeout=30)
            broker.server.stop()
            time.sleep(5)
            broker.server.start()
            published = set(publisher.published)
            wait_for(lambda: published <= set(sink.task_ids()), timeout=60)
            assert not proc.exited(), proc.tail()
        finally:
            proc.stop()
    if broker.kind == "redis":
        assert "unacknowledged message(s) wait for this worker to reconnect" in proc.output()
