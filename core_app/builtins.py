"""The host's own routes, registered as a plugin like any other (Datasette's way).

``/health`` answers whenever the process serves. ``/ready`` answers 503 when something
the app needs is down (the broker, a plugin's check); a plugin skipped in lenient mode
is listed there but is not a reason for 503. ``/plugins`` is the plugin report, off in
production unless ``EXPOSE_PLUGINS`` is set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from flask import Blueprint, Flask, Response, abort, current_app, jsonify

from .discovery import HOST_DISTRIBUTION, PluginSource, host_version
from .hookspecs import hookimpl

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
    return blueprint


@hookimpl
def core_app_health_checks() -> Mapping[str, Callable[[], object]]:
    from .tasks import check_broker

    return {"broker": check_broker}


def health() -> Response:
    return jsonify({"status": "ok", "version": host_version()})


def ready() -> tuple[Response, int]:
    host = current_app.extensions["core_app"]
    checks: dict[str, dict[str, object]] = {}
    for record in host.active():
        for name, check in record.health_checks.items():
            label = name if record.builtin else f"{record.name}.{name}"
            checks[label] = _run_check(label, check)
    ok = all(result["ok"] for result in checks.values())
    body = {
        "status": "ready" if ok else "unavailable",
        "checks": checks,
        "plugins": {
            "loaded": [r.name for r in host.plugins() if r.active],
            "failed": [
                {"name": r.name, "error": r.error.message if r.error else None}
                for r in host.failed()
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


def plugins() -> Response:
    if not current_app.config["EXPOSE_PLUGINS"]:
        abort(404)
    host = current_app.extensions["core_app"]
    return jsonify([record.as_dict() for record in host.plugins()])
