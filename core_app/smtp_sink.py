"""A real SMTP server for tests: what a plugin that sends email is tested against."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from typing import Any, Self

from .servers import free_port


@dataclass(frozen=True)
class ReceivedMail:
    """One message an :class:`SmtpSink` accepted."""

    recipients: list[str]
    content: bytes
    at: float  # time.monotonic() when it arrived
    tls: bool = False  # its session was encrypted (smtps or STARTTLS)
    authenticated: bool = False  # its session logged in

    @property
    def message(self) -> Message:
        return message_from_bytes(self.content)


class SmtpSink:
    """A real SMTP server on loopback (aiosmtpd) that keeps every message it accepts.

    ``answer(recipient, attempt)`` may return an SMTP reply (``"451 ..."``, ``"550 ..."``)
    to refuse a delivery instead; ``delay`` seconds pass before each reply (a slow
    server); ``port`` defaults to a free one. ``credentials`` (user, password) makes it
    offer AUTH and accept only those (each attempt is kept in ``logins``).
    ``smtp_options`` go to aiosmtpd's ``Controller`` and ``SMTP`` (``ssl_context`` for
    smtps, ``tls_context`` and ``require_starttls`` for STARTTLS, ``server_hostname``...).
    """

    def __init__(
        self,
        *,
        delay: float = 0.0,
        answer: Callable[[str, int], str | None] | None = None,
        port: int | None = None,
        credentials: tuple[str, str] | None = None,
        **smtp_options: Any,
    ) -> None:
        self.delay = delay
        self.answer = answer
        self.credentials = credentials
        self.logins: list[tuple[str, str]] = []
        self.received: list[ReceivedMail] = []
        #: recipient -> time.monotonic() of each delivery attempt to it (refused ones too)
        self.attempts: dict[str, list[float]] = {}
        from aiosmtpd.controller import Controller  # the test extra's: imported when used

        if credentials is not None:
            smtp_options.update(authenticator=self._authenticate, auth_require_tls=False)
        port = port or free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=port, **smtp_options)

    @property
    def url(self) -> str:
        """The ``smtp://`` URL of the server, for ``NOTIFICATIONS_SMTP_URL``."""
        return f"smtp://127.0.0.1:{self._controller.port}"

    @property
    def port(self) -> int:
        return int(self._controller.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        for recipient in envelope.rcpt_tos:
            tries = self.attempts.setdefault(recipient, [])
            tries.append(time.monotonic())
            refusal = self.answer and self.answer(recipient, len(tries))
            if refusal:
                return refusal
        tls = session.ssl is not None or (  # STARTTLS, or smtps from the first byte
            server.transport.get_extra_info("ssl_object") is not None
        )
        self.received.append(
            ReceivedMail(
                list(envelope.rcpt_tos),
                bytes(envelope.content),
                time.monotonic(),
                tls=tls,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 OK"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult

        login = (auth_data.login.decode(), auth_data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == self.credentials)

    def messages(self, to: str | None = None) -> list[Message]:
        """The messages received (those whose ``To`` is ``to``, if given), parsed."""
        parsed = [mail.message for mail in self.received]
        return [m for m in parsed if to is None or m["To"] == to]

    def __enter__(self) -> Self:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
