"""The host's own routes, registered as a plugin like any other (Datasette's way).

``/health`` answers 200 whenever the process serves (liveness). ``/ready`` (readiness)
answers 503 ``"unavailable"`` when something the app needs is down (the broker, a
plugin's check); ``"degraded"`` with 200 when a plugin was skipped in lenient mode but
every check passes (the other plugins serve, and a 503 would take every process out of
rotation for one broken plugin); ``"ready"`` with 200 otherwise. ``/plugins`` is the
plugin report, off in production unless ``EXPOSE_PLUGINS`` is set; the OpenAPI document
(``OPENAPI_URL``, :mod:`core_app.openapi`) is off there unless ``EXPOSE_API_DOCS`` is.

Anonymous callers of a production app learn a status, check names and plugin names,
nothing more: versions, error texts (which can hold a broker's host and port) and the
failed plugins' causes need ``EXPOSE_HEALTH_DETAILS`` (on by default in development);
operators have them from ``python run.py plugins`` and the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, abort, current_app, jsonify

from .discovery import HOST_DISTRIBUTION, PluginSource, host_version
from .hookspecs import hookimpl
from .schemas import schema

if TYPE_CHECKING:
    from sqlalchemy import MetaData

log = logging.getLogger("core_app.health")

BUILTIN_NAME = "core_app"


def source() -> PluginSource:
    import core_app.builtins as module

    return PluginSource(
        BUILTIN_NAME,
        __name__,
        distribution=HOST_DISTRIBUTION,
        version=host_version(),
        obj=module,
    )


@hookimpl
def core_app_blueprint(app: Flask) -> Blueprint:
    blueprint = Blueprint(BUILTIN_NAME, __name__)
    blueprint.add_url_rule("/health", view_func=health)
    blueprint.add_url_rule("/ready", view_func=ready)
    blueprint.add_url_rule("/plugins", view_func=plugins)
    blueprint.add_url_rule(app.config["OPENAPI_URL"], view_func=openapi)
    return blueprint


@hookimpl
def core_app_health_checks() -> Mapping[str, Callable[[], object]]:
    from .celery_app import check_broker
    from .db_health import check_database, check_migrations

    return {"broker": check_broker, "database": check_database, "migrations": check_migrations}


@hookimpl
def core_app_models() -> MetaData:
    from .outbox import metadata  # the outbox and inbox tables (branch core_app)

    return metadata


@hookimpl
def core_app_migrations() -> Path:
    return Path(__file__).with_name("host_migrations")


@schema(responses={200: None})
def health() -> Response:
    """Liveness: 200 whenever the process serves."""
    body: dict[str, object] = {"status": "ok"}
    if current_app.config["EXPOSE_HEALTH_DETAILS"]:
        body["version"] = host_version()
    return jsonify(body)


@schema(responses={200: None, 503: "The same report, status unavailable."})
def ready() -> tuple[Response, int]:
    """Readiness: each check and plugin; 503 when something the app needs is down."""
    host = current_app.extensions["core_app"]
    details = bool(current_app.config["EXPOSE_HEALTH_DETAILS"])
    checks: dict[str, dict[str, object]] = {}
    for record in host.active():
        for name, check in record.health_checks.items():
            label = name if record.builtin else f"{record.name}.{name}"
            result = _run_check(label, check)
            checks[label] = result if details else {"ok": result["ok"]}
    ok = all(result["ok"] for result in checks.values())
    failed = host.failed()
    if not ok:
        status = "unavailable"
    elif failed:
        status = "degraded"
    else:
        status = "ready"
    body = {
        "status": status,
        "checks": checks,
        "plugins": {
            "loaded": [r.name for r in host.plugins() if r.active],
            "failed": [
                {"name": r.name, "error": r.error.message if r.error else None}
                if details
                else {"name": r.name}
                for r in failed
            ],
        },
    }
    return jsonify(body), 200 if ok else 503


def _run_check(label: str, check: Callable[[], object]) -> dict[str, object]:
    try:
        check()
    except Exception as exc:  # a failing check is a report, not a crash
        log.warning("readiness check %s failed: %s", label, exc)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True}


@schema(responses={200: None, 404: None})
def plugins() -> Response:
    """The plugin report (404 unless EXPOSE_PLUGINS)."""
    if not current_app.config["EXPOSE_PLUGINS"]:
        abort(404)
    host = current_app.extensions["core_app"]
    return jsonify([record.as_dict() for record in host.plugins()])


@schema(responses={200: None, 404: None})
def openapi() -> Response:
    """This document (404 unless EXPOSE_API_DOCS)."""
    if not current_app.config["EXPOSE_API_DOCS"]:
        abort(404)
    from .openapi import openapi_json

    return current_app.response_class(openapi_json(current_app), mimetype="application/json")
