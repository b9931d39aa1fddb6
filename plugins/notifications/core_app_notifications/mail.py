"""Build and deliver one email: SMTP when configured, otherwise an .eml file."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

from flask import current_app

from .constants import TEMPORARY_SMTP_CODES
from .enums import Transport


class TemporaryFailure(Exception):
    """The server could not take the message now; trying again later may work."""


def build_message(to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = current_app.config["NOTIFICATIONS_SENDER"]
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="core-app.local")
    message.set_content(body)
    return message


def deliver(message: EmailMessage, name: str) -> dict[str, str]:
    smtp_url = current_app.config["NOTIFICATIONS_SMTP_URL"]
    if smtp_url:
        _send_smtp(message, smtp_url)
        return {"transport": Transport.SMTP, "message_id": message["Message-ID"]}
    outbox = Path(current_app.instance_path) / current_app.config["NOTIFICATIONS_OUTBOX"]
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{name}.eml"
    path.write_bytes(bytes(message))
    return {"transport": Transport.OUTBOX, "message_id": message["Message-ID"], "path": str(path)}


def _send_smtp(message: EmailMessage, url: str) -> None:
    parts = urlsplit(url)
    timeout = float(current_app.config["NOTIFICATIONS_SMTP_TIMEOUT"])
    try:
        with smtplib.SMTP(parts.hostname or "localhost", parts.port or 25, timeout=timeout) as smtp:
            if parts.username:
                smtp.login(unquote(parts.username), unquote(parts.password or ""))
            smtp.send_message(message)
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code in TEMPORARY_SMTP_CODES:
            raise TemporaryFailure(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if all(code in TEMPORARY_SMTP_CODES for code in codes):
            raise TemporaryFailure(f"recipients refused for now: {exc.recipients}") from exc
        raise
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise TemporaryFailure(f"SMTP server unreachable: {exc}") from exc
