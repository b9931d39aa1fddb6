"""The shop's declared schemas: the patterns the API document shows say what the
validators enforce, so clients that follow the document send text the shop accepts."""

from __future__ import annotations

import itertools
import re
import unicodedata

import pytest
from core_app_shop.schemas import ONE_LINE_PATTERN, UserIn, one_line
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

NAMES = [
    "Ann",
    "  Ann Smith ",
    "Zoë Ødegård",
    "李雷",
    "a=b?c",
    "Ann\r\nBcc: evil@attacker.example",
    "Ann\tSmith",
    "Ann\x00",
    "Ann\x85Smith",
    "Ann\u2028Smith",
    "Ann\u2029Smith",
    "=?utf-8?q?Ann?=",
    "Ann =?",
    "",
    "   ",
    "\u3000",
]


def accepted(name: str) -> bool:
    try:
        UserIn(name=name, email="ann@example.org")
    except ValidationError:
        return False
    return True


def one_line_refuses(text: str) -> bool:
    try:
        one_line(text)
    except PydanticCustomError:
        return True
    return False


@pytest.mark.parametrize("name", NAMES)
def test_the_documented_pattern_agrees_with_the_validator(name):
    assert bool(re.fullmatch(ONE_LINE_PATTERN, name)) == accepted(name)


def test_the_pattern_and_the_validator_agree_on_every_short_string_of_the_tricky_characters():
    alphabet = ["=", "?", " ", "a", "\n", "\u3000"]
    for length in range(5):
        for chars in itertools.product(alphabet, repeat=length):
            text = "".join(chars)
            matched = re.fullmatch(ONE_LINE_PATTERN, text) is not None
            assert matched != one_line_refuses(text), repr(text)


def test_the_pattern_and_the_validator_refuse_exactly_the_unsafe_unicode_categories():
    """Every character of the BMP, where all four categories lie, and a sample beyond.
    Surrogates aside for the pattern: the host refuses every JSON body holding one."""
    for point in [*range(0x10000), *range(0x10000, 0x110000, 251)]:
        char = chr(point)
        category = unicodedata.category(char)
        refused = category in {"Cc", "Cs", "Zl", "Zp"}
        assert one_line_refuses(f"a{char}") == refused, hex(point)
        if category != "Cs":
            assert (re.fullmatch(ONE_LINE_PATTERN, f"a{char}") is None) == refused, hex(point)


def test_the_document_carries_the_patterns(core_app_client):
    schemas = core_app_client.get("/openapi.json").get_json()["components"]["schemas"]
    properties = schemas["shop.UserIn"]["properties"]
    assert properties["name"]["pattern"] == ONE_LINE_PATTERN
    assert properties["email"]["pattern"].startswith("^[A-Za-z0-9")
    assert schemas["shop.PurchaseIn"]["properties"]["item"]["pattern"] == ONE_LINE_PATTERN
