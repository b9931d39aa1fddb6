"""The command line: ``python run.py [COMMAND]`` and ``flask --app run COMMAND``.

Commands are added to ``app.cli``, so Flask's own CLI finds them; ``main`` wraps the
same app in a ``FlaskGroup`` whose default, with no command, is to serve.
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
from flask import Flask, current_app
from flask.cli import FlaskGroup, ScriptInfo, with_appcontext
from flask.helpers import get_debug_flag
from werkzeug.serving import run_simple

from .config import is_production
from .errors import ConfigError, PluginConflictError
from .plugins import PluginHost
from .records import PluginRecord
from .tasks import DEFAULT_QUEUE

WORKER_SCOPE_ENV = "CORE_APP_WORKER_PLUGINS"


def init_cli(app: Flask, host: PluginHost) -> None:
    """Add the host's commands and each plugin's command group to ``app.cli``."""
    for command in (plugins_command, worker_command, beat_command, serve_command, new_plugin):
        app.cli.add_command(command)
    host.each(lambda record: _add_plugin_commands(app, host, record), builtins=False)


def _add_plugin_commands(app: Flask, host: PluginHost, record: PluginRecord) -> None:
    commands = host.call(record, "core_app_cli_commands")
    if not commands:
        return
    if record.name in app.cli.commands or record.name in ("run", "shell", "routes"):
        raise PluginConflictError(
            record.name,
            f"its command group would replace the host command {record.name!r}.",
            "rename the plugin's entry point.",
            other="the host (core_app)",
        )
    group = click.Group(record.name, help=f"Commands of the {record.name} plugin.")
    for command in commands:
        group.add_command(command)
    app.cli.add_command(group)


def main(app: Flask) -> None:
    """Run the CLI of ``app``; with no command, serve it (``python run.py``)."""

    @click.pass_context
    def default(ctx: click.Context, host: str, port: int) -> None:
        if ctx.invoked_subcommand is None:
            ctx.invoke(serve_command, host=host, port=port)

    cli = FlaskGroup(
        name="run.py",
        create_app=lambda: app,
        invoke_without_command=True,
        callback=default,
        params=[
            click.Option(["--host"], default="127.0.0.1", show_default=True),
            click.Option(["--port"], default=5000, type=int, show_default=True),
        ],
        help="Serve the API (the default), or run one of the commands below.",
    )
    if is_production(app):
        # Flask's own `run --debugger` would serve the Werkzeug debugger: in production
        # `run` is the host's serve command, which refuses the debugger.
        cli.add_command(serve_command, "run")
    cli.main()


# -- plugins ----------------------------------------------------------------------------

_COLUMNS = ("name", "distribution", "version", "url_prefix", "routes", "task_modules", "status")


@click.group("plugins", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
@with_appcontext
def plugins_command(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins: where they mount, their tasks, their status."""
    if ctx.invoked_subcommand is not None:
        return
    host: PluginHost = current_app.extensions["core_app"]
    rows = [record.as_dict() for record in host.plugins()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(_table(rows))


def _table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], column: str) -> str:
        value = row[column]
        if column == "status" and row["status"] != "loaded":
            return f"{value}: {row['error'] or row['reason']}"
        if isinstance(value, list):
            return ", ".join(value) or "-"
        return "-" if value is None else str(value)

    cells = [[cell(row, c) for c in _COLUMNS] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) if rows else "No plugins installed."


@plugins_command.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a report.")
def check_command(as_json: bool) -> None:
    """Check every installed plugin alone, then all together; exit 1 on any problem."""
    from .doctor import main as doctor

    sys.exit(doctor(["--json"] if as_json else []))


@click.command("new-plugin")
@click.argument("name")
@click.option(
    "--dir", "directory", default="plugins", show_default=True, type=click.Path(file_okay=False)
)
def new_plugin(name: str, directory: str) -> None:
    """Write a new plugin distribution NAME in DIR, ready to pip install and test."""
    from pathlib import Path

    from .scaffold import write_plugin

    try:
        root = write_plugin(name, Path(directory))
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"Wrote {root}. Next: pip install -e {root} && pytest {root}")


# -- workers ----------------------------------------------------------------------------


@click.command(
    "worker",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
)
@click.option("--all", "all_plugins", is_flag=True, help="Consume every enabled plugin's queue.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def worker_command(all_plugins: bool, args: Sequence[str]) -> None:
    """Start a Celery worker for one plugin (PLUGIN) or for all (--all).

    Arguments after the plugin name go to Celery's worker, e.g.
    ``python run.py worker notifications --concurrency 4 --loglevel INFO``.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    host: PluginHost = app.extensions["core_app"]
    celery_app: Celery = app.extensions["celery"]
    args = list(args)
    if all_plugins:
        queues = [r.queue for r in host.active(builtins=False) if r.queue]
        celery_app.worker_main(["worker", "-Q", ",".join([*queues, DEFAULT_QUEUE]), *args])
        return
    if not args or args[0].startswith("-"):
        raise click.UsageError("Name a plugin (python run.py worker shop) or use --all.")
    name, args = args[0], args[1:]
    record = _enabled_record(host, name)
    if app.config["WORKER_PLUGINS"] != [name]:
        _reexec_scoped_to(name)
    hostname = [] if {"-n", "--hostname"} & set(args) else ["-n", f"{name}@%h"]
    celery_app.worker_main(["worker", "-Q", record.queue or name, *hostname, *args])


def _enabled_record(host: PluginHost, name: str) -> PluginRecord:
    record = host.records.get(name)
    if record is None or record.builtin:
        known = ", ".join(r.name for r in host.plugins()) or "none"
        raise click.UsageError(f"No plugin named {name!r} is installed (installed: {known}).")
    if not record.enabled:
        raise click.UsageError(f"Plugin {name!r} is disabled: {record.reason}.")
    if record.failed and record.error:
        raise click.ClickException(record.error.message)
    return record


def _reexec_scoped_to(name: str) -> None:
    """Start over in a process that loads only this plugin, so it imports no other's
    task modules; the same command line runs again with the scope set."""
    env = {**os.environ, WORKER_SCOPE_ENV: name}
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


@click.command("beat", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def beat_command(args: Sequence[str]) -> None:
    """Start Celery beat with every enabled plugin's periodic tasks."""
    celery_app: Celery = current_app.extensions["celery"]
    celery_app.start(["beat", *args])


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
@with_appcontext
def serve_command(
    ctx: click.Context, host: str, port: int, embedded_worker: bool | None = None
) -> None:
    """Serve the API with Werkzeug's server (use gunicorn in production)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
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
    info = ctx.find_object(ScriptInfo)
    if info is not None and info.app_import_path:
        return [sys.executable, "-m", "flask", "--app", info.app_import_path, *args]
    return [sys.executable, sys.argv[0], *args]
