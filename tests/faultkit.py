"""Tools of the delivery fault tests: an SMTP sink, a steady publisher of emails.

Each fault test runs its own redis-server (``core_app.servers.RedisServer``) so it may
restart or freeze it without touching the session's, its own ``python run.py worker``
processes (``procs``), an SMTP sink in the test process, and a publisher thread that
queues emails through ``core_app.send_task`` the way the web does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from flask import Flask
from procs import clean_env

from core_app import create_app, send_task
from core_app.discovery import rescan
from core_app.errors import BrokerUnavailable
from core_app.servers import free_port


@dataclass
class Sink:
    """An aiosmtpd handler keeping, for each message, its Message-ID, subject and time."""

    delay: float = 0.0
    received: list[tuple[str, str, float]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        message = message_from_bytes(envelope.content)
        self.received.append((message["Message-ID"], message["Subject"], time.monotonic()))
        return "250 OK"

    def task_ids(self) -> list[str]:
        """Task ids of the messages received, once per delivery (the Message-ID is
        ``<task id@core-app.local>``)."""
        return [message_id.strip("<>").partition("@")[0] for message_id, _, _ in self.received]

    def first_arrival(self) -> dict[str, float]:
        arrived: dict[str, float] = {}
        for task_id, (_, _, at) in zip(self.task_ids(), self.received, strict=True):
            arrived.setdefault(task_id, at)
        return arrived


@contextmanager
def smtp_sink(delay: float = 0.0) -> Iterator[tuple[Sink, str]]:
    """An SMTP server on loopback: yields the handler and its ``smtp://`` URL."""
    sink = Sink(delay)
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield sink, f"smtp://127.0.0.1:{controller.port}"
    finally:
        controller.stop()


def email_worker_env(
    broker_url: str, instance: Path, smtp_url: str, **more: object
) -> dict[str, str]:
    """The environment of a notifications worker that mails to ``smtp_url``, retrying fast."""
    return clean_env(
        CORE_APP_BROKER_URL=broker_url,
        CORE_APP_INSTANCE_PATH=str(instance),
        CORE_APP_NOTIFICATIONS_SMTP_URL=smtp_url,
        CORE_APP_NOTIFICATIONS_RETRY_DELAY=0.2,
        **more,
    )


def client_app(broker_url: str, instance: Path) -> Flask:
    """An app in this process that publishes to ``broker_url`` (the web's side)."""
    rescan()
    return create_app({"TESTING": True, "INSTANCE_PATH": str(instance), "BROKER_URL": broker_url})


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
