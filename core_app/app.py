"""The application factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from flask import Flask, abort, request
from flask.helpers import get_debug_flag

from . import builtins, roles
from .celery_app import celery_init_app, check_time_limits
from .cli import init_cli
from .config import PRODUCTION, instance_path, load_config, plugin_namespace
from .db import init_db
from .docs_page import init_docs_page
from .errors import ConfigError, PluginConflictError, PluginDeclarationError
from .hostapp import CoreApp
from .mounting import Mounter
from .openapi import check_operation_ids
from .plugins import PluginHost
from .records import PluginRecord
from .responses import register_error_handlers
from .roles import Role
from .task_options import apply_task_options
from .tasks import unregister_inactive_tasks
from .wrappers import HostRequest

log = logging.getLogger("core_app")


def create_app(
    test_config: Mapping[str, Any] | None = None,
    *,
    plugins: Mapping[str, object] | None = None,
    role: Role | None = None,
) -> Flask:
    """Build the app for this process's role: configuration, then the routes and tasks
    of the plugins the role needs.

    :param test_config: configuration applied over every other layer.
    :param plugins: extra plugin objects by name, registered as if installed (tests).
    :param role: what this process is for; by default the role the command line
        declared (:func:`core_app.roles.assume`), else a web process's (every plugin).
    :raises CoreAppError: in strict mode, for the first broken plugin; always, for
        invalid host configuration.
    """
    role = role or roles.current()
    instance = instance_path(test_config)
    app = CoreApp("core_app", instance_path=str(instance), static_folder=None)
    app.request_class = HostRequest  # JSON bodies: 400, never a 500 (wrappers.py)
    try:
        load_config(app, test_config)
    finally:  # ENV is read even when another setting is refused
        _refuse_debugger_in_production(app)
    instance.mkdir(parents=True, exist_ok=True)

    host = PluginHost(app, role, plugins)
    app.extensions["core_app"] = host
    host.load([builtins.source()])
    host.each(lambda record: _apply_config_defaults(app, host, record), builtins=False)
    register_error_handlers(app)
    if role.mounts_routes:
        init_docs_page(app)  # host routes, before any plugin may claim their place
        Mounter(app, host).mount_all()
    celery_init_app(app, host)
    init_db(app, host)  # tables and migrations per plugin, the outbox (core_app.db)
    host.each(lambda record: apply_task_options(host, record), builtins=False)
    check_time_limits(app.extensions["celery"])
    host.each(lambda record: _collect_declarations(host, record))
    _configure_beat(app, host)
    init_cli(app, host)
    app.sealed = True
    host.each(lambda record: host.call(record, "core_app_ready", app=app))
    check_operation_ids(app, host)
    _refuse_routes_of_failed_plugins(app, host)
    unregister_inactive_tasks(app, host)
    app.remember_mounted()
    return app


def _refuse_debugger_in_production(app: Flask) -> None:
    """``flask --app run run --debugger`` (or ``--debug``) wraps the app in the Werkzeug
    debugger, outside anything the app controls, and Flask's reloader serves even an app
    that failed to build through it. So in production, under Flask's ``run`` with the
    debugger on, the process exits: an exception would be caught and served."""
    if app.config.get("ENV") != PRODUCTION:
        return
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if "debugger" in ctx.params and (ctx.params["debugger"] or get_debug_flag()):
            error = ConfigError(
                "Production never runs the debugger: drop --debugger / --debug / "
                "FLASK_DEBUG, and serve with gunicorn (see the README, Production deployment)."
            )
            click.echo(f"core_app refused to start.\n\n{error}", err=True)
            raise SystemExit(1)
        ctx = ctx.parent


def _apply_config_defaults(app: Flask, host: PluginHost, record: PluginRecord) -> None:
    defaults = host.call(record, "core_app_config_defaults") or {}
    if not isinstance(defaults, Mapping) or not all(
        isinstance(key, str) and key.isupper() and key.isidentifier() for key in defaults
    ):
        raise PluginDeclarationError(
            record.name,
            f"core_app_config_defaults() returned {defaults!r}.",
            "return a dict of UPPER_CASE keys (without the plugin prefix) to defaults.",
        )
    namespace = plugin_namespace(record.name)
    owners = app.extensions.setdefault("core_app.config_owners", {})
    for key in defaults:
        full = namespace + key
        if owners.get(full, record.name) != record.name:
            raise PluginConflictError(
                record.name,
                f"its config key {full} is declared by plugin {owners[full]!r} too.",
                "rename the key.",
                other=f"plugin {owners[full]!r}",
            )
    for key, value in defaults.items():
        owners[namespace + key] = record.name
        app.config.setdefault(namespace + key, value)
    record.config_keys = sorted(namespace + key for key in defaults)


def _collect_declarations(host: PluginHost, record: PluginRecord) -> None:
    """Beat schedules and readiness checks, validated so a typo fails at start-up."""
    schedule = host.call(record, "core_app_beat_schedule") or {}
    if not isinstance(schedule, Mapping) or not all(
        isinstance(entry, Mapping) and "task" in entry and "schedule" in entry
        for entry in schedule.values()
    ):
        raise PluginDeclarationError(
            record.name,
            f"core_app_beat_schedule() returned {schedule!r}.",
            "return {'name': {'task': 'plugin.task', 'schedule': seconds_or_crontab}}.",
        )
    record.beat_schedule = {f"{record.name}.{name}": dict(e) for name, e in schedule.items()}
    checks = host.call(record, "core_app_health_checks") or {}
    if not isinstance(checks, Mapping) or not all(callable(c) for c in checks.values()):
        raise PluginDeclarationError(
            record.name,
            f"core_app_health_checks() returned {checks!r}.",
            "return a dict of check name to a callable that raises when unhealthy.",
        )
    record.health_checks = dict(checks)


def _configure_beat(app: Flask, host: PluginHost) -> None:
    celery_app = app.extensions["celery"]
    celery_app.conf.beat_schedule = {
        name: entry for record in host.active() for name, entry in record.beat_schedule.items()
    }
    celery_app.conf.beat_schedule_filename = str(Path(app.instance_path) / "celerybeat-schedule")


def _refuse_routes_of_failed_plugins(app: Flask, host: PluginHost) -> None:
    """A plugin that failed after it was mounted must not go on serving its routes."""
    failed = {r.blueprint for r in host.failed() if r.blueprint}
    if not failed:
        return

    def refuse() -> None:
        if failed.intersection(request.blueprints):
            abort(503, "This plugin failed at start-up; see GET /ready.")

    app.before_request(refuse)
