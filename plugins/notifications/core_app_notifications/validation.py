"""What the notifications plugin accepts: one mailbox, header-safe text, allowed recipients.

:class:`EmailIn` holds every rule, once. It runs twice: in the view, declared with
``@core_app.schema`` (400 naming each field, and the API document), and in the task
through :func:`check_email`, because other plugins call the task by name
(``notifications.send_email``) past the view. Nothing that fails these checks reaches a
message, let alone an SMTP server.

- ``to``: exactly one address, checked by email-validator for syntax only (no DNS). A
  display name, a comma list, quoting, an IP literal, control or invisible characters are
  refused. Internationalised *domains* are accepted and sent in their ASCII (IDNA) form;
  a non-ASCII *local part* (``ädä@example.org``) is refused, because delivering it needs
  SMTPUTF8 from every server on the way.
- ``subject``: no control characters (CR, LF, NUL, tab...), no Unicode line or paragraph
  separators, and no RFC 2047 encoded word (``=?charset?q?...?=``). Python's email
  package decodes encoded words when a header is set and, before 3.11.10 and 3.12.5
  (CVE-2024-6923), writes what they decode to, CR/LF included, as raw header lines.
- ``body``: text lines; no control characters but tab and line ends.
- Recipients: ``NOTIFICATIONS_ALLOWED_RECIPIENTS`` lists addresses (``ops@example.org``)
  and domains (``@example.org``, that domain only) mail may go to. Without it, mail may
  go anywhere only when ``NOTIFICATIONS_ALLOW_ANY_RECIPIENT`` is true or outside
  production; a production app with neither does not start (:func:`check_settings`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, Field, ValidationError, ValidationInfo
from pydantic_core import PydanticCustomError

from .constants import MAX_ADDRESS_LENGTH, MAX_BODY_LENGTH, MAX_SUBJECT_LENGTH

#: Unicode categories refused in header text: control, surrogate, line/paragraph separator.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
#: An RFC 2047 encoded word, or anything shaped like one (``=?`` ... ``?=``).
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)

ALLOWED_RECIPIENTS = "NOTIFICATIONS_ALLOWED_RECIPIENTS"
ALLOW_ANY_RECIPIENT = "NOTIFICATIONS_ALLOW_ANY_RECIPIENT"


class InvalidEmail(ValueError):
    """An email the plugin refuses to send, with a reason per field."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        # The one argument is the mapping, so Celery rebuilds the error from a result.
        self.errors = dict(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "; ".join(f"{field}: {why}" for field, why in self.errors.items())


def header_text_error(value: str) -> str | None:
    """Why ``value`` may not go into a header, or None when it may."""
    for char in value:
        if unicodedata.category(char) in _UNSAFE_CATEGORIES:
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            return f"must not contain control or line-break characters (found {name})"
    if _ENCODED_WORD.search(value):
        return "must not contain an RFC 2047 encoded word ('=?...?=')"
    return None


def body_error(value: str) -> str | None:
    """Why ``value`` may not be a message body, or None when it may."""
    text = value.replace("\r\n", "\n")
    for char in text:
        if char not in "\t\n" and unicodedata.category(char) in _UNSAFE_CATEGORIES:
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            return f"must not contain control characters other than tab and line ends ({name})"
    return None


def mailbox(value: str) -> str:
    """The one address in ``value``, in ASCII form; raises ValueError saying why not."""
    if len(value) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"at most {MAX_ADDRESS_LENGTH} characters")
    try:
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"must be one email address: {exc}") from None
    return str(checked.ascii_email)


def _recipient(value: str, info: ValidationInfo) -> str:
    """One mailbox, in ASCII form, that the recipient policy allows (the app's config
    comes in the validation context, as ``@core_app.schema`` and :func:`check_email`
    give it)."""
    try:
        address = mailbox(value)
    except ValueError as exc:
        raise PydanticCustomError("mailbox", str(exc)) from None
    if not recipient_allowed(address, info.context["config"]):
        raise PydanticCustomError(
            "recipient", f"not an allowed recipient (see {ALLOWED_RECIPIENTS})"
        )
    return address


def _header_text(value: str) -> str:
    if why := header_text_error(value):
        raise PydanticCustomError("header_text", why)
    return value


def _body_text(value: str) -> str:
    if why := body_error(value):
        raise PydanticCustomError("body_text", why)
    return value


class EmailIn(BaseModel):
    """One email to send."""

    to: Annotated[
        str,
        Field(
            strict=True,
            max_length=MAX_ADDRESS_LENGTH,
            description="One plain address, that NOTIFICATIONS_ALLOWED_RECIPIENTS allows.",
            json_schema_extra={"format": "email"},
        ),
        AfterValidator(_recipient),
    ]
    subject: Annotated[
        str,
        Field(
            strict=True,
            max_length=MAX_SUBJECT_LENGTH,
            description="One line: no control characters, no RFC 2047 encoded word.",
        ),
        AfterValidator(_header_text),
    ]
    body: Annotated[
        str,
        Field(
            strict=True,
            max_length=MAX_BODY_LENGTH,
            description="Text; no control characters but tab and line ends.",
        ),
        AfterValidator(_body_text),
    ]


def check_email(to: Any, subject: Any, body: Any, config: Mapping[str, Any]) -> dict[str, str]:
    """The email with ``to`` in its ASCII form, checked by :class:`EmailIn`; raises
    :class:`InvalidEmail`. ``config`` is the app's config (for the recipient policy)."""
    try:
        email = EmailIn.model_validate(
            {"to": to, "subject": subject, "body": body}, context={"config": config}
        )
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors(include_url=False, include_input=False):
            errors.setdefault(str(error["loc"][0]), error["msg"])
        raise InvalidEmail(errors) from None
    return email.model_dump()


# -- recipient policy -------------------------------------------------------------------


def allowed_recipients(config: Mapping[str, Any]) -> list[str] | None:
    """The allowlist in its normal form (``@domain`` or an address, ASCII, lower case);
    None when it is not set. Raises ValueError for an entry that is neither."""
    value = config.get(ALLOWED_RECIPIENTS)
    if value is None or value == "" or value == []:
        return None
    entries = value.split(",") if isinstance(value, str) else value
    if not isinstance(entries, list | tuple) or not all(isinstance(e, str) for e in entries):
        raise ValueError(f"{ALLOWED_RECIPIENTS} must be a list of strings, not {value!r}")
    allowed = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        if entry.startswith("@"):
            domain = mailbox("postmaster" + entry).partition("@")[2]
            allowed.append("@" + domain.lower())
        else:
            allowed.append(mailbox(entry).lower())
    return allowed or None


def recipient_allowed(address: str, config: Mapping[str, Any]) -> bool:
    """Whether the policy lets mail go to ``address`` (already checked by :func:`mailbox`)."""
    allowed = allowed_recipients(config)
    if allowed is None:
        return bool(config.get(ALLOW_ANY_RECIPIENT)) or config.get("ENV") != "production"
    address = address.lower()
    return address in allowed or "@" + address.partition("@")[2] in allowed


def check_settings(config: Mapping[str, Any]) -> str | None:
    """What is wrong with the recipient policy settings, or None."""
    try:
        allowed = allowed_recipients(config)
    except ValueError as exc:
        return f"{ALLOWED_RECIPIENTS} holds an invalid entry: {exc}"
    opened = config.get(ALLOW_ANY_RECIPIENT)
    if not isinstance(opened, bool):
        return f"{ALLOW_ANY_RECIPIENT} must be true or false, not {opened!r}"
    if allowed is not None and opened:
        return f"both {ALLOWED_RECIPIENTS} and {ALLOW_ANY_RECIPIENT}=true are set; set one"
    if allowed is None and not opened and config.get("ENV") == "production":
        return (
            f"in production, {ALLOWED_RECIPIENTS} must list the domains (@example.org) or "
            f"addresses mail may go to, or {ALLOW_ANY_RECIPIENT}=true must open it to any "
            "address: otherwise POST /api/notifications/emails would mail anyone"
        )
    return None
