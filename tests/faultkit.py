"""Tools of the delivery fault tests: a broker to break, an SMTP sink, a publisher.

Each fault test runs on both brokers (the ``broker`` fixture): the session's own
redis-server, or the session's private RabbitMQ node (``core_app.servers``) with a vhost
of the test's own and results on the session's Redis. Either may be stopped, restarted
and frozen without touching the machine's servers. Workers are ``python run.py worker``
processes (``procs``), the SMTP sink runs in the test process, and a publisher thread
queues emails through ``core_app.send_task`` the way the web does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from kombu import Connection
from procs import clean_env

from core_app import create_app, send_task
from core_app.discovery import rescan
from core_app.errors import BrokerUnavailable
from core_app.servers import RabbitMQServer, RedisServer
from core_app.testing import SmtpSink

BROKERS = ("redis", "amqp")


@dataclass
class Broker:
    """The broker of one test, Redis or RabbitMQ, and the calls a fault test makes on it."""

    kind: str
    url: str
    result_backend: str
    server: RedisServer | RabbitMQServer

    def __str__(self) -> str:
        return self.kind

    def env(self) -> dict[str, str]:
        """``CORE_APP_*`` settings of a process on this broker."""
        return {"CORE_APP_BROKER_URL": self.url, "CORE_APP_RESULT_BACKEND": self.result_backend}

    def config(self) -> dict[str, str]:
        """The same, for ``create_app``."""
        return {"BROKER_URL": self.url, "RESULT_BACKEND": self.result_backend}

    def waiting(self, queue: str) -> int:
        """Messages on ``queue`` that no worker holds."""
        if isinstance(self.server, RedisServer):
            return int(self.server.client().llen(queue))
        with Connection(self.url, connect_timeout=5) as connection:
            return int(connection.default_channel.queue_declare(queue, passive=True).message_count)

    def held(self, queue: str) -> int:
        """Messages of ``queue`` delivered and not yet acknowledged (Redis: of any queue)."""
        if isinstance(self.server, RedisServer):
            return int(self.server.client().hlen("unacked"))
        vhost = self.url.rpartition("/")[2] or "/"
        rows = self.server.ctl("list_queues", "-q", "-p", vhost, "name", "messages_unacknowledged")
        counts = dict(line.split("\t") for line in rows.splitlines() if "\t" in line)
        return int(counts.get(queue, 0))


@pytest.fixture(name="broker", params=BROKERS)
def broker_fixture(request: pytest.FixtureRequest) -> Broker:
    """The session's Redis (flushed), or a fresh vhost on the session's RabbitMQ node with
    results on that Redis: every fault runs on both brokers."""
    redis_url: str = request.getfixturevalue("redis_url")
    if request.param == "redis":
        return Broker("redis", redis_url, redis_url, request.getfixturevalue("redis_server"))
    amqp_url: str = request.getfixturevalue("amqp_url")
    return Broker("amqp", amqp_url, redis_url, request.getfixturevalue("rabbitmq_server"))


class Sink(SmtpSink):
    """The shipped SMTP sink, read as the email task's deliveries (each Message-ID is
    ``<task id@core-app.local>``)."""

    def task_ids(self) -> list[str]:
        """Task ids of the messages received, once per delivery."""
        return [mail.message["Message-ID"].strip("<>").partition("@")[0] for mail in self.received]

    def first_arrival(self) -> dict[str, float]:
        arrived: dict[str, float] = {}
        for task_id, mail in zip(self.task_ids(), self.received, strict=True):
            arrived.setdefault(task_id, mail.at)
        return arrived


@contextmanager
def smtp_sink(delay: float = 0.0) -> Iterator[tuple[Sink, str]]:
    """An SMTP server on loopback: yields it and its ``smtp://`` URL."""
    with Sink(delay=delay) as sink:
        yield sink, sink.url


def email_worker_env(
    broker: Broker, instance: Path, smtp_url: str, **more: object
) -> dict[str, str]:
    """The environment of a notifications worker that mails to ``smtp_url``, retrying fast."""
    return clean_env(
        **broker.env(),
        CORE_APP_INSTANCE_PATH=str(instance),
        CORE_APP_NOTIFICATIONS_SMTP_URL=smtp_url,
        CORE_APP_NOTIFICATIONS_RETRY_DELAY=0.2,
        **more,
    )


def client_app(broker: Broker, instance: Path) -> Flask:
    """An app in this process that publishes to ``broker`` (the web's side)."""
    rescan()
    return create_app({"TESTING": True, "INSTANCE_PATH": str(instance), **broker.config()})


class Publisher(threading.Thread):
    """Queues ``count`` emails, ``interval`` seconds apart, retrying while the broker is
    unreachable; ``published`` maps each task id to when its publish returned."""

    def __init__(self, app: Flask, count: int, interval: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.app, self.count, self.interval = app, count, interval
        self.published: dict[str, float] = {}
        self.refused = 0

    def run(self) -> None:
        with self.app.app_context():
            number = 0
            while number < self.count:
                try:
                    result = send_task(
                        "notifications.send_email",
                        kwargs={
                            "to": f"user{number}@example.com",
                            "subject": f"n{number}",
                            "body": ".",
                        },
                    )
                except BrokerUnavailable:
                    self.refused += 1
                    time.sleep(0.1)
                    continue
                self.published[result.id] = time.monotonic()
                number += 1
                time.sleep(self.interval)
