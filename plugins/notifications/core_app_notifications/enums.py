"""Enumerations of the notifications plugin."""

from enum import StrEnum


class Transport(StrEnum):
    """How an email left: through an SMTP server, or as a file in the outbox folder."""

    SMTP = "smtp"
    OUTBOX = "outbox"
