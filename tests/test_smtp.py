"""The notifications worker against a real SMTP server on loopback (core_app.testing.SmtpSink).

One worker (``python run.py worker notifications`` with ``NOTIFICATIONS_SMTP_URL``) and
one SMTP server serve the whole module; what the server answers depends on the
recipient, so the tests do not depend on each other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from procs import clean_env, worker

from core_app import create_app, send_task
from core_app.discovery import rescan
from core_app.testing import SmtpSink

RETRY_DELAY = 0.2


def _answer(recipient: str, attempt: int) -> str | None:
    """``later-*`` recipients get 451 once, ``never-*`` get 550."""
    if recipient.startswith("later-") and attempt == 1:
        return "451 4.3.0 Try again later"
    if recipient.startswith("never-"):
        return "550 5.1.1 No such user"
    return None


@dataclass
class Mail:
    inbox: SmtpSink
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
    with SmtpSink(answer=_answer) as inbox:
        env = clean_env(
            CORE_APP_BROKER_URL=url,
            CORE_APP_INSTANCE_PATH=str(tmp / "worker"),
            CORE_APP_NOTIFICATIONS_SMTP_URL=inbox.url,
            CORE_APP_NOTIFICATIONS_RETRY_DELAY=RETRY_DELAY,
        )
        proc = worker("notifications", env, tmp / "worker.log")
        try:
            rescan()
            client = {"TESTING": True, "INSTANCE_PATH": str(tmp / "client"), "BROKER_URL": url}
            yield Mail(inbox, create_app(client))
        finally:
            proc.stop()
    assert not (tmp / "worker" / "outbox").exists(), "with SMTP_URL nothing goes to the outbox"


def send(mail: Mail, to: str, subject: str):
    with mail.app.app_context():
        return send_task(
            "notifications.send_email", kwargs={"to": to, "subject": subject, "body": "Hello."}
        )


def test_an_email_arrives_with_its_recipient_and_subject(mail):
    result = send(mail, "ada@example.com", "Your receipt")
    sent = result.get(timeout=20)
    [message] = mail.inbox.messages("ada@example.com")
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
    [message] = mail.inbox.messages(to)
    assert message["Subject"] == "Second try"


def test_a_permanent_failure_fails_the_task_without_retries(mail):
    to = "never-nobody@example.com"
    result = send(mail, to, "Lost")
    result.get(timeout=20, propagate=False)
    assert result.state == "FAILURE"
    assert "550" in str(result.result) and "No such user" in str(result.result)
    time.sleep(RETRY_DELAY * 4)  # a retry would have come by now
    assert len(mail.inbox.attempts[to]) == 1
    assert mail.inbox.messages(to) == []
