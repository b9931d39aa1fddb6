"""JSON error bodies for every error status, with no traceback or path in any of them.

Clients of an API expect JSON even when something fails; operators expect the
traceback in the log, not in the response.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError

from .errors import BrokerUnavailable

log = logging.getLogger("core_app.requests")


def json_error(status: int, error: str, message: str, **extra: object) -> Response:
    """An error response in the one shape every core_app route uses."""
    response = jsonify({"error": error, "message": message, "status": status, **extra})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(BrokerUnavailable, broker_unavailable)
    app.register_error_handler(OperationalError, broker_unavailable)
    app.register_error_handler(Exception, _unexpected)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = json_error(status, exc.name, exc.description or exc.name)
    for header in ("Allow", "Retry-After"):
        original = exc.get_response().headers.get(header)
        if original:
            response.headers[header] = original
    return response


def broker_unavailable(exc: Exception) -> Response:
    log.error("publishing a task failed: %s", exc)
    response = json_error(
        503,
        "Service Unavailable",
        "The task queue is unreachable. Try again shortly.",
    )
    response.headers["Retry-After"] = "5"
    return response


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    error = InternalServerError()
    return json_error(500, error.name, error.description or error.name)
