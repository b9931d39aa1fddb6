"""Build and deliver one email: SMTP when configured, otherwise an .eml file.

A message is built from checked fields (:mod:`.validation`) with the SMTP policy, then
serialised once; the header block of those bytes is checked to hold exactly the headers
we set, each once, before the same bytes go to the SMTP server (``sendmail`` with an
explicit envelope of one recipient) or to the outbox. So a header that an interpreter's
email package would fold wrongly (CVE-2024-6923) is refused, whatever Python runs this.

SMTP URLs: ``smtp://host:25`` (plain), ``smtp://host:587?starttls=true`` (STARTTLS) and
``smtps://host:465`` (TLS from the first byte); ``user:password@`` logs in. Certificates
are verified against the system's CAs, or ``NOTIFICATIONS_SMTP_CA_FILE``. A password is
never sent without TLS unless ``NOTIFICATIONS_SMTP_ALLOW_PLAINTEXT_LOGIN`` is true.
"""

from __future__ import annotations

import email.policy
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from flask import current_app

from .constants import TEMPORARY_SMTP_CODES
from .enums import Transport
from .validation import InvalidEmail, check_email, header_text_error

#: The headers every message has, each exactly once, and no other.
HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
)
_TRUE = ("1", "true", "yes", "on")
#: What a Message-ID's key may be made of: a task id, a UUID or the signed id the view
#: issues (hex, a dot, base64url timestamp, a dot, base64url signature), as a dot-atom.
_MESSAGE_KEY = re.compile(r"(?=.{1,128}\Z)[0-9A-Za-z_-]+(?:\.[0-9A-Za-z_-]+)*")


class TemporaryFailure(Exception):
    """The server could not take the message now; trying again later may work."""


class UnsafeSettings(ValueError):
    """The SMTP settings are invalid or would leak a password."""


@dataclass(frozen=True)
class Email:
    """A message ready to go: its envelope and its checked bytes."""

    sender: str
    recipient: str
    message_id: str
    data: bytes


def build_message(to: str, subject: str, body: str, key: str | None = None) -> Email:
    """Check the fields again (callers of the task skip the view), build, serialise and
    check the result; raises :class:`~.validation.InvalidEmail`. With ``key`` (the task
    id, a UUID) the Message-ID is ``<key@core-app.local>``, the same for every attempt, so
    a message sent twice is recognisable as one."""
    fields = check_email(to, subject, body, current_app.config)
    sender = current_app.config["NOTIFICATIONS_SENDER"]
    if not isinstance(sender, str) or header_text_error(sender):
        raise InvalidEmail({"NOTIFICATIONS_SENDER": "must be one plain address"})
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = fields["to"]
    message["Subject"] = fields["subject"]
    message["Date"] = formatdate(localtime=False, usegmt=True)
    stable = key is not None and _MESSAGE_KEY.fullmatch(key)
    message["Message-ID"] = (
        f"<{key}@core-app.local>" if stable else make_msgid(domain="core-app.local")
    )
    message.set_content(fields["body"])
    data = message.as_bytes()
    check_headers(data)
    return Email(sender, fields["to"], str(message["Message-ID"]), data)


def check_headers(data: bytes) -> None:
    """Refuse ``data`` unless its header block holds exactly :data:`HEADERS`, each once,
    on CRLF-ended lines (continuations start with a space or tab)."""
    head, separator, _ = data.partition(b"\r\n\r\n")
    if not separator:
        raise InvalidEmail({"message": "no blank line after the headers"})
    names = []
    for line in head.split(b"\r\n"):
        if b"\r" in line or b"\n" in line:
            raise InvalidEmail({"message": "a bare CR or LF in the headers"})
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if not colon:
            raise InvalidEmail({"message": f"a header line without a name: {line[:40]!r}"})
        names.append(name.decode("ascii", "replace"))
    if sorted(names) != sorted(HEADERS):
        raise InvalidEmail({"message": f"unexpected headers {names} (expected {list(HEADERS)})"})


def deliver(message: Email, name: str) -> dict[str, Any]:
    smtp_url = current_app.config["NOTIFICATIONS_SMTP_URL"]
    if smtp_url:
        _send_smtp(message, smtp_settings(current_app.config))
        return {"transport": Transport.SMTP, "message_id": message.message_id}
    outbox = Path(current_app.instance_path) / current_app.config["NOTIFICATIONS_OUTBOX"]
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{name}.eml"
    path.write_bytes(message.data)
    # The file's name within the outbox: where the outbox is stays on the server.
    return {"transport": Transport.OUTBOX, "message_id": message.message_id, "file": path.name}


# -- SMTP -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    tls: str  # "none", "starttls" or "implicit"
    username: str | None
    password: str | None
    ca_file: str | None
    timeout: float


def smtp_settings(config: Any) -> SmtpSettings:
    """``NOTIFICATIONS_SMTP_URL`` and its companions; raises :class:`UnsafeSettings`."""
    url = str(config["NOTIFICATIONS_SMTP_URL"])
    parts = urlsplit(url)
    query = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls"}
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname or unknown:
        raise UnsafeSettings(
            "NOTIFICATIONS_SMTP_URL must be smtp://host:port, smtp://host:port?starttls=true "
            "or smtps://host:port (optionally with user:password@)"
        )
    starttls = query.get("starttls", "false") in _TRUE
    if parts.scheme == "smtps" and starttls:
        raise UnsafeSettings("smtps:// is TLS already; drop ?starttls=true")
    tls = "implicit" if parts.scheme == "smtps" else "starttls" if starttls else "none"
    if parts.username and tls == "none" and not _flag(config, "SMTP_ALLOW_PLAINTEXT_LOGIN"):
        raise UnsafeSettings(
            "NOTIFICATIONS_SMTP_URL logs in without TLS, which sends the password in plain "
            "text: use smtps:// or ?starttls=true, or set "
            "NOTIFICATIONS_SMTP_ALLOW_PLAINTEXT_LOGIN=true for a server on a trusted network"
        )
    default_port = 465 if tls == "implicit" else 25
    return SmtpSettings(
        host=parts.hostname,
        port=parts.port or default_port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password or "") if parts.username else None,
        ca_file=config.get("NOTIFICATIONS_SMTP_CA_FILE") or None,
        timeout=float(config["NOTIFICATIONS_SMTP_TIMEOUT"]),
    )


def _flag(config: Any, key: str) -> bool:
    value = config.get(f"NOTIFICATIONS_{key}", False)
    return value is True or str(value).lower() in _TRUE


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """Verifies the server's certificate and host name (the system CAs, or the CA file)."""
    return ssl.create_default_context(cafile=settings.ca_file)


def _connect(settings: SmtpSettings) -> smtplib.SMTP:
    if settings.tls == "implicit":
        return smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout, context=_tls_context(settings)
        )
    smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    if settings.tls == "starttls":
        try:
            smtp.starttls(context=_tls_context(settings))
        except BaseException:
            smtp.close()
            raise
    return smtp


def _send_smtp(message: Email, settings: SmtpSettings) -> None:
    try:
        with _connect(settings) as smtp:
            if settings.username is not None:
                smtp.login(settings.username, settings.password or "")
            smtp.sendmail(message.sender, [message.recipient], message.data)
    except ssl.SSLCertVerificationError:
        raise  # a wrong certificate stays wrong: no retry
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code in TEMPORARY_SMTP_CODES:
            raise TemporaryFailure(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if all(code in TEMPORARY_SMTP_CODES for code in codes):
            raise TemporaryFailure(f"recipients refused for now: {exc.recipients}") from exc
        raise
    except smtplib.SMTPNotSupportedError:
        raise  # e.g. no STARTTLS offered: never fall back to plain text
    except (OSError, smtplib.SMTPServerDisconnected) as exc:
        raise TemporaryFailure(f"SMTP server unreachable: {exc}") from exc
