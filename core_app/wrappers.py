"""The host's request class: a JSON body can be refused, never crash a plugin's route.

Two kinds of JSON parse without error in Python and fail later, as a 500 in whatever
plugin touched them:

- deep nesting: ``[[[[...]]]]`` about a thousand levels deep raises ``RecursionError``
  inside ``json.loads`` (not a ``ValueError``, so Flask does not treat it as bad JSON),
  and a little less deep parses but overflows the stack of the next ``jsonify``;
- lone surrogates: ``"\\ud800"`` (or the same code point encoded in the raw bytes) is
  a valid JSON string but not Unicode text: writing it to SQLite, a task message or a
  response raises ``UnicodeEncodeError``.

:class:`HostRequest`, the app's ``request_class``, decides once for every plugin: such a
body is invalid JSON. ``request.get_json()`` then answers 400 with the host's JSON error
body (``{"error", "message", "status"}``), and ``request.get_json(silent=True)`` returns
``None`` as for any other invalid JSON, so a plugin answers its own 400.

The extra checks cost two ``str.count`` and one regular-expression search over the body;
only a body with more brackets than ``MAX_JSON_DEPTH`` has its nesting measured (regular
expressions, C speed), and the parsed value is walked only when the body may hold a
surrogate.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from flask import Request, current_app, has_app_context
from flask import json as flask_json
from werkzeug.exceptions import BadRequest

#: Used when there is no app (never in a request): the default of MAX_JSON_DEPTH.
DEFAULT_MAX_JSON_DEPTH = 100

#: A surrogate code point, or a JSON escape that may produce one (``\ud800``).
#: A JSON escape that may stand for a surrogate (``\ud800``), and a surrogate itself.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
#: A JSON string literal (the body already parsed, so it is well formed).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")


class JSONBodyRejected(ValueError):
    """A JSON body that parses but that no route can use safely (too deep, not text)."""


def max_json_depth() -> int:
    if has_app_context():
        return int(current_app.config.get("MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH))
    return DEFAULT_MAX_JSON_DEPTH


def loads(data: str | bytes, parse: Any = flask_json.loads, **kwargs: Any) -> Any:
    """``parse(data)`` (the app's JSON provider), refusing what :class:`JSONBodyRejected`
    describes."""
    if isinstance(data, (bytes, bytearray)):
        # What json.loads does with bytes, done here so the checks see the text.
        data = bytes(data).decode(json.detect_encoding(data), "surrogatepass")
    limit = max_json_depth()
    try:
        value = parse(data, **kwargs)
    except RecursionError:
        _too_deep(limit)
    if data.count("[") + data.count("{") > limit and nesting_exceeds(data, limit):
        _too_deep(limit)
    if _SURROGATE_ESCAPE.search(data) or (not data.isascii() and _SURROGATE.search(data)):
        check_strings(value)
    return value


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether well-formed JSON ``text`` nests arrays and objects deeper than ``limit``.

    Strings are dropped, then the brackets alone: each pass removes every innermost
    ``[]``/``{}`` pair, so the number of passes that empties them is the depth. At most
    ``limit`` passes, each a regular-expression substitution (C speed).
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _EMPTY_PAIR.sub("", brackets)
    return bool(brackets)


def check_strings(value: Any) -> None:
    """Raise :class:`JSONBodyRejected` if a string (key or value) in parsed JSON holds a
    lone surrogate. Iterative: a deep value cannot overflow the stack here."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise JSONBodyRejected(
                    "The JSON body contains a lone UTF-16 surrogate (\\ud800-\\udfff), "
                    "which is not Unicode text."
                )
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _too_deep(limit: int) -> NoReturn:
    raise JSONBodyRejected(f"The JSON body is nested deeper than {limit} levels.") from None


class _CheckedJSON:
    """A request's ``json_module``: the app's JSON provider, with :func:`loads` checks."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def loads(self, data: str | bytes, **kwargs: Any) -> Any:
        return loads(data, self.provider.loads, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.provider, name)


class HostRequest(Request):
    """Flask's request, with JSON bodies checked as the module docstring says.

    Flask sets each request's ``json_module`` to the app's JSON provider; this class
    keeps that provider and puts the checks in front of its ``loads``.
    """

    _json: _CheckedJSON = _CheckedJSON(flask_json)

    @property
    def json_module(self) -> Any:
        return self._json

    @json_module.setter
    def json_module(self, provider: Any) -> None:
        self._json = _CheckedJSON(provider)

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if isinstance(e, JSONBodyRejected):
            raise BadRequest(str(e))
        return super().on_json_loading_failed(e)
