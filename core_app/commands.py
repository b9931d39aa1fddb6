"""The host's commands: serve, worker, beat, plugins (and check), new-plugin, openapi,
deadletters.

Each loads the app for its own role through :func:`core_app.loading.app_for`; the same
command objects are added to ``app.cli``, so ``flask --app run plugins`` works too (with
every plugin loaded: Flask builds the app before it reads the command).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import click
from celery import Celery
from flask import Flask
from flask.cli import ScriptInfo
from flask.helpers import get_debug_flag

from .config import is_production
from .db_cli import db_command
from .errors import ConfigError
from .loading import AppLoader, app_for, installed
from .plugins import PluginHost
from .records import PluginRecord
from .roles import BEAT, COMMAND, Role
from .tasks import DEFAULT_QUEUE

# -- plugins ----------------------------------------------------------------------------

#: ``routes`` counts endpoints x methods (HEAD and OPTIONS aside), ``beat`` the periodic
#: tasks by entry name.
_COLUMNS = (
    "name",
    "distribution",
    "version",
    "url_prefix",
    "routes",
    "task_modules",
    "beat",
    "status",
)


@click.group("plugins", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins: where they mount, their tasks, their status."""
    if ctx.invoked_subcommand is not None:
        return
    app = app_for(Role(lenient=True))
    host: PluginHost = app.extensions["core_app"]
    for warning in host.warnings:
        click.echo(f"Warning: {warning}", err=True)
    with app.app_context():  # as_dict counts routes on this app's URL map
        rows = [record.as_dict() for record in host.plugins()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(_table(rows))


def _table(
    rows: list[dict[str, Any]],
    columns: Sequence[str] = _COLUMNS,
    empty: str = "No plugins installed.",
) -> str:
    def cell(row: dict[str, Any], column: str) -> str:
        value = row[column]
        if column == "status" and row["status"] != "loaded":
            return f"{value}: {row['error'] or row['reason']}"
        if column == "beat":
            return ", ".join(f"{e['name']} ({e['schedule']})" for e in value) or "-"
        if isinstance(value, list):
            return ", ".join(value) or "-"
        return "-" if value is None else str(value)

    cells = [[cell(row, c) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) if rows else empty


@plugins_command.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a report.")
@click.option(
    "--all", "include_excluded", is_flag=True, help="Check plugins excluded by PLUGINS too."
)
def check_command(as_json: bool, include_excluded: bool) -> None:
    """Check every enabled plugin alone, then all together; exit 1 on any problem."""
    from .doctor import main as doctor

    flags = [*(["--json"] if as_json else []), *(["--all"] if include_excluded else [])]
    sys.exit(doctor(flags))


@click.command("new-plugin")
@click.argument("name")
@click.option(
    "--dir", "directory", default="plugins", show_default=True, type=click.Path(file_okay=False)
)
def new_plugin(name: str, directory: str) -> None:
    """Write a new plugin distribution NAME in DIR, ready to pip install and test."""
    from pathlib import Path

    from .scaffold import next_step, write_plugin

    try:
        root = write_plugin(name, Path(directory))
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"Wrote {root}. Next: {next_step(root)}")


@click.command("openapi")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the document to this file instead of standard output.",
)
def openapi_command(output: str | None) -> None:
    """Write the OpenAPI document the web server serves (whatever EXPOSE_API_DOCS says)."""
    from .openapi import openapi_json

    app = app_for(Role())  # a web process's app: every plugin it would serve
    text = openapi_json(app) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    with open(output, "w", encoding="utf-8") as file:
        file.write(text)


# -- workers ----------------------------------------------------------------------------

_PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command("worker", context_settings=_PASSTHROUGH)
@click.option("--all", "all_plugins", is_flag=True, help="Consume every enabled plugin's queue.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def worker_command(all_plugins: bool, args: Sequence[str]) -> None:
    """Start a Celery worker for one plugin (PLUGIN) or for all (--all).

    A worker for PLUGIN imports that plugin and the plugins it depends on, nothing else.
    Arguments after the plugin name go to Celery's worker, e.g.
    ``python run.py worker notifications --concurrency 4 --loglevel INFO``.
    """
    args = list(args)
    if all_plugins:
        app = app_for(Role.worker())
        host: PluginHost = app.extensions["core_app"]
        queues = [r.queue for r in host.served() if r.queue]
        _celery(app).worker_main(["worker", "-Q", ",".join([*queues, DEFAULT_QUEUE]), *args])
        return
    if not args or args[0].startswith("-"):
        raise click.UsageError("Name a plugin (python run.py worker shop) or use --all.")
    name, args = args[0], args[1:]
    names = sorted({source.name for source in installed()})
    if name not in names:
        known = ", ".join(names) or "none"
        raise click.UsageError(f"No plugin named {name!r} is installed (installed: {known}).")
    app = app_for(Role.worker([name]))
    record = _served_record(app.extensions["core_app"], name)
    hostname = [] if {"-n", "--hostname"} & set(args) else ["-n", f"{name}@%h"]
    _celery(app).worker_main(["worker", "-Q", record.queue or name, *hostname, *args])


def _served_record(host: PluginHost, name: str) -> PluginRecord:
    record = host.records[name]
    if not record.enabled:
        raise click.UsageError(f"Plugin {name!r} is disabled: {record.reason}.")
    if record.failed and record.error:
        raise click.ClickException(record.error.message)
    return record


def _celery(app: Flask) -> Celery:
    celery_app: Celery = app.extensions["celery"]
    return celery_app


@click.command("beat", context_settings=_PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def beat_command(args: Sequence[str]) -> None:
    """Start Celery beat with every enabled plugin's periodic tasks (no task modules)."""
    _celery(app_for(Role(BEAT))).start(["beat", *args])


# -- dead letters -----------------------------------------------------------------------


@click.group("deadletters")
def deadletters_command() -> None:
    """Tasks parked after MAX_DELIVERIES deliveries (a Redis list per plugin)."""


def _parked_store(app: Flask) -> Any:
    from . import deadletter

    redis_client = deadletter.client(app.config)
    if redis_client is None:
        raise click.ClickException(
            "Dead letters are kept in Redis: neither BROKER_URL nor RESULT_BACKEND is redis://."
        )
    return redis_client


@deadletters_command.command("list")
@click.argument("plugin", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def deadletters_list(plugin: str | None, as_json: bool) -> None:
    """List the tasks parked for PLUGIN (default: every installed plugin)."""
    from . import deadletter

    app = app_for(Role(COMMAND, ()))
    names = [plugin] if plugin else [source.name for source in installed()]
    redis_client = _parked_store(app)
    rows = [
        row for name in names for row in deadletter.summary(deadletter.parked(redis_client, name))
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(_table(rows, deadletter.COLUMNS, "No parked tasks."))


@deadletters_command.command("requeue")
@click.argument("plugin")
@click.option("--id", "ids", multiple=True, metavar="ID", help="A parked task's id (repeatable).")
@click.option("--all", "requeue_all", is_flag=True, help="Every task parked for PLUGIN.")
def deadletters_requeue(plugin: str, ids: tuple[str, ...], requeue_all: bool) -> None:
    """Queue parked tasks of PLUGIN again, their delivery count reset."""
    from . import deadletter

    if bool(ids) == requeue_all:
        raise click.UsageError("Give --id ID (one or more) or --all.")
    app = app_for(Role(COMMAND, (plugin,)))
    queued = deadletter.requeue(app, _parked_store(app), plugin, None if requeue_all else ids)
    missing = sorted(set(ids) - set(queued))
    for task_id in queued:
        click.echo(f"requeued {task_id}")
    if missing:
        raise click.ClickException(f"Not parked for {plugin}: {', '.join(missing)}")


# -- serving ----------------------------------------------------------------------------


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, type=int, show_default=True)
@click.option(
    "--embedded-worker/--no-embedded-worker",
    default=None,
    help="Run a worker beside the server (default: when no BROKER_URL is set).",
)
@click.pass_context
def serve_command(
    ctx: click.Context, host: str, port: int, embedded_worker: bool | None = None
) -> None:
    """Serve the API with Werkzeug's server (use gunicorn in production)."""
    app = app_for(Role())
    debug = get_debug_flag()
    if debug and is_production(app):
        raise click.ClickException(str(ConfigError("Production never runs the debugger.")))
    if embedded_worker is None:
        embedded_worker = not app.config["BROKER_URL"]
    worker = None
    if embedded_worker and os.environ.get("WERKZEUG_RUN_MAIN") != "true":
        worker = subprocess.Popen(_self_command(ctx, "worker", "--all", "--concurrency", "1"))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        from werkzeug.serving import run_simple  # only the server needs it

        app.debug = debug
        run_simple(host, port, app, use_reloader=debug, use_debugger=debug, threaded=True)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _self_command(ctx: click.Context, *args: str) -> list[str]:
    """The command line that runs ``args`` against this same app."""
    info = ctx.ensure_object(ScriptInfo)
    loader = info if isinstance(info, AppLoader) else AppLoader(info.app_import_path)
    return loader.command(*args)


HOST_COMMANDS: tuple[click.Command, ...] = (
    serve_command,
    worker_command,
    beat_command,
    plugins_command,
    new_plugin,
    openapi_command,
    deadletters_command,
    db_command,
)
