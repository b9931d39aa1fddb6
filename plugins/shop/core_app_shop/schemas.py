"""What the shop's routes accept and answer, declared once for validation and the API
document (``@core_app.schema`` in :mod:`.views`).

Names, items and addresses end up in emailed receipts, so each is one line of text:
no control or line-break characters (CR, LF, NUL, U+2028...) and no ``=?`` (the start of
an RFC 2047 encoded word, which a mail header would decode). Numbers are JSON integers,
never strings or booleans, within their limits.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from .constants import (
    MAX_EMAIL_LENGTH,
    MAX_ITEM_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PRICE_CENTS,
    MAX_QUANTITY,
)
from .enums import ReceiptStatus

#: What one line may not hold: the control characters (Unicode category Cc: CR, LF,
#: NUL...) and the line and paragraph separators (Zl, Zp), as a character class that
#: Python and JSON Schema (ECMA-262) read alike; and surrogates (Cs).
_CONTROL = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
UNSAFE_CHAR = re.compile(f"[{_CONTROL}\\ud800-\\udfff]")
#: The same rules as a JSON Schema pattern, for the API document: clients (and the
#: schemathesis run in CI) then send text the shop accepts; one_line() enforces them.
#: Spaces, then a first other character, then the rest, "=" never followed by "?". No
#: lookahead (fuzzers generate from it slowly). Surrogates are left out: no JSON body
#: holding one gets past the host (wrappers.py), and schema validators cannot name them.
_NO_ENCODED_WORD = f"[^={_CONTROL}]*(?:=+[^=?{_CONTROL}][^={_CONTROL}]*)*=*"
ONE_LINE_PATTERN = (
    f"^[^\\S{_CONTROL}]*"
    f"(?:[^\\s={_CONTROL}]{_NO_ENCODED_WORD}|=+(?:[^=?{_CONTROL}]{_NO_ENCODED_WORD})?)$"
)
#: One plain address: no spaces, lists, quotes, brackets or display names. The
#: notifications plugin checks it again, fully, before it sends anything.
EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"  # an ASCII local part (RFC 5322 atoms)
    r"@[^\s@,;:<>()\[\]\\\"]+\.[^\s@,;:<>()\[\]\\\"]+"  # a dotted domain, IDN allowed
)


def one_line(value: str) -> str:
    """``value`` without surrounding spaces; raises when it is blank or not one safe line."""
    if not value.strip():
        raise PydanticCustomError("blank", "required, a non-empty string")
    if UNSAFE_CHAR.search(value):
        raise PydanticCustomError("line_break", "must not contain control or line-break characters")
    if "=?" in value:
        raise PydanticCustomError(
            "encoded_word", "must not contain '=?' (an encoded word in an email header)"
        )
    return value.strip()


def plain_address(value: str) -> str:
    if not EMAIL.fullmatch(value):
        raise PydanticCustomError("email", "must be one email address, such as ann@example.org")
    return value


_ONE_LINE = "One line of text: no control or line-break characters, no '=?'."


def _text(limit: int, pattern: str = ONE_LINE_PATTERN, description: str = _ONE_LINE) -> object:
    return Field(
        strict=True,
        max_length=limit,
        description=description,
        json_schema_extra={"pattern": pattern},
    )


def _integer(low: int, high: int) -> object:
    return Field(strict=True, ge=low, le=high)


class UserIn(BaseModel):
    """A new user."""

    name: Annotated[str, _text(MAX_NAME_LENGTH), AfterValidator(one_line)]
    email: Annotated[
        str,
        _text(MAX_EMAIL_LENGTH, f"^{EMAIL.pattern}$", "One plain address (ann@example.org)."),
        AfterValidator(one_line),
        AfterValidator(plain_address),
    ]


class User(BaseModel):
    id: int
    name: str
    email: str


class Users(BaseModel):
    users: list[User]


class PurchaseIn(BaseModel):
    """A purchase by an existing user; its receipt is emailed."""

    user_id: Annotated[int, _integer(1, 2**62)]
    item: Annotated[str, _text(MAX_ITEM_LENGTH), AfterValidator(one_line)]
    quantity: Annotated[int, _integer(1, MAX_QUANTITY)]
    price_cents: Annotated[int, _integer(0, MAX_PRICE_CENTS)]


class _PurchaseFields(BaseModel):
    id: int
    user_id: int
    item: str
    quantity: int
    price_cents: int


class Purchase(_PurchaseFields):
    created_at: str = Field(description="UTC, ISO 8601 (2026-01-31T12:00:00Z).")


class Purchases(BaseModel):
    purchases: list[Purchase]


class Receipt(BaseModel):
    status: ReceiptStatus
    task_id: str | None = Field(default=None, description="When queued.")


class PurchaseCreated(_PurchaseFields):
    receipt: Receipt


class Welcome(BaseModel):
    plugin: str
    message: str
