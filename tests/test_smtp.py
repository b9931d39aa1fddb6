"""The notifications worker against a real SMTP server (aiosmtpd) on loopback.

One worker (``python run.py worker notifications`` with ``NOTIFICATIONS_SMTP_URL``) and
one SMTP server serve the whole module; what the server answers depends on the
recipient, so the tests do not depend on each other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message

import pytest
from aiosmtpd.controller import Controller
from flask import Flask
from procs import clean_env, worker

from core_app import create_app, send_task
from core_app.discovery import rescan
from core_app.testing import free_port

RETRY_DELAY = 0.2


@dataclass
class Inbox:
    """An aiosmtpd handler: ``later-*`` recipients get 451 once, ``never-*`` get 550."""

    messages: list[Message] = field(default_factory=list)
    attempts: dict[str, list[float]] = field(default_factory=dict)

    async def handle_DATA(self, server, session, envelope) -> str:
        [recipient] = envelope.rcpt_tos
        tries = self.attempts.setdefault(recipient, [])
        tries.append(time.monotonic())
        if recipient.startswith("later-") and len(tries) == 1:
            return "451 4.3.0 Try again later"
        if recipient.startswith("never-"):
            return "550 5.1.1 No such user"
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def received(self, to: str) -> list[Message]:
        return [message for message in self.messages if message["To"] == to]


@dataclass
class Mail:
    inbox: Inbox
    app: Flask


@pytest.fixture(scope="module")
def mail(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mail]:
    """The SMTP server, a notifications worker sending through it, and a client app.

    They use Redis database 1, which no other test of this module flushes.
    """
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    url = redis_server.url.rpartition("/")[0] + "/1"
    redis_server.client().flushall()
    tmp = tmp_path_factory.mktemp("smtp")
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    env = clean_env(
        CORE_APP_BROKER_URL=url,
        CORE_APP_INSTANCE_PATH=str(tmp / "worker"),
        CORE_APP_NOTIFICATIONS_SMTP_URL=f"smtp://127.0.0.1:{controller.port}",
        CORE_APP_NOTIFICATIONS_RETRY_DELAY=RETRY_DELAY,
    )
    proc = worker("notifications", env, tmp / "worker.log")
    try:
        rescan()
        app = create_app({"TESTING": True, "INSTANCE_PATH": str(tmp / "client"), "BROKER_URL": url})
        yield Mail(inbox, app)
    finally:
        proc.stop()
        controller.stop()
    assert not (tmp / "worker" / "outbox").exists(), "with SMTP_URL nothing goes to the outbox"


def send(mail: Mail, to: str, subject: str):
    with mail.app.app_context():
        return send_task(
            "notifications.send_email", kwargs={"to": to, "subject": subject, "body": "Hello."}
        )


def test_an_email_arrives_with_its_recipient_and_subject(mail):
    result = send(mail, "ada@example.com", "Your receipt")
    sent = result.get(timeout=20)
    [message] = mail.inbox.received("ada@example.com")
    assert message["Subject"] == "Your receipt"
    assert message["From"] == "core-app@localhost"
    assert message.get_payload().strip() == "Hello."
    assert sent == {
        "to": "ada@example.com",
        "transport": "smtp",
        "message_id": message["Message-ID"],
    }
    assert len(mail.inbox.attempts["ada@example.com"]) == 1


def test_a_temporary_failure_is_retried_then_delivered(mail):
    to = "later-grace@example.com"
    result = send(mail, to, "Second try")
    assert result.get(timeout=20)["transport"] == "smtp"
    first, second = mail.inbox.attempts[to]
    assert second - first >= RETRY_DELAY * 0.9, "retried after NOTIFICATIONS_RETRY_DELAY"
    [message] = mail.inbox.received(to)
    assert message["Subject"] == "Second try"


def test_a_permanent_failure_fails_the_task_without_retries(mail):
    to = "never-nobody@example.com"
    result = send(mail, to, "Lost")
    result.get(timeout=20, propagate=False)
    assert result.state == "FAILURE"
    assert "550" in str(result.result) and "No such user" in str(result.result)
    time.sleep(RETRY_DELAY * 4)  # a retry would have come by now
    assert len(mail.inbox.attempts[to]) == 1
    assert mail.inbox.received(to) == []
