"""The command line: ``python run.py``, ``python -m core_app`` and ``core-app``.

A command knows what its process is for before any plugin is imported: ``worker shop``
is a worker for shop, ``beat`` is beat, no command is a web server. Each command
declares that role (:mod:`core_app.roles`) and only then loads the app module, as
Flask's ``ScriptInfo`` does, so ``app = create_app()`` in run.py builds once, for that
role. ``--help``, ``--version``, ``new-plugin`` and ``plugins check`` build no app at all,
so they work whatever state the installed plugins are in. The same commands are added
to ``app.cli``, so ``flask --app run plugins`` works too (with every plugin loaded).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import version
from types import FrameType
from typing import IO, Any

import click
from celery import Celery
from celery.signals import worker_process_init
from flask import Flask
from flask.cli import ScriptInfo, routes_command, shell_command
from flask.helpers import get_debug_flag

from .config import instance_path, is_production
from .db_cli import db_command
from .discovery import PluginSource, host_version, installed_plugins
from .errors import ConfigError, CoreAppError, PluginConflictError
from .plugins import PluginHost
from .records import PluginRecord
from .roles import BEAT, COMMAND, Role, assume
from .tasks import DEFAULT_QUEUE


def _installed() -> tuple[PluginSource, ...]:
    """Installed plugins from metadata, through the same cache create_app() reads."""
    return installed_plugins(instance_path())


class RefusedToStart(click.ClickException):
    """The app could not be built: one paragraph saying why, no traceback, exit 1."""

    def __init__(self, error: CoreAppError) -> None:
        super().__init__(str(error))

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"core_app refused to start.\n\n{self.message}", err=True)


class AppLoader(ScriptInfo):
    """Loads the app once, for the role the command declared.

    :param import_path: ``module:name`` or ``path/to/file.py:name`` of the app, as for
        ``flask --app``; None builds ``create_app()`` with no module of the user's.
    """

    def __init__(self, import_path: str | None) -> None:
        super().__init__(app_import_path=import_path, set_debug_flag=False)
        if import_path is None:
            from .app import create_app

            self.create_app = create_app
        self.role = Role()

    def load_for(self, role: Role) -> Flask:
        self.role = role
        return self.load_app()

    def load_app(self) -> Flask:
        assume(self.role)
        try:
            return super().load_app()
        except CoreAppError as error:
            raise RefusedToStart(error) from error

    def command(self, *args: str) -> list[str]:
        """The command line that runs ``args`` against this same app in a new process."""
        if not self.app_import_path:
            return [sys.executable, "-m", "core_app", *args]
        module, _, name = self.app_import_path.partition(":")
        loaded = sys.modules.get(module.removesuffix(".py").replace("/", "."))
        path = getattr(loaded, "__file__", None) or module
        return [sys.executable, "-m", "core_app", "--app", f"{path}:{name or 'app'}", *args]


def _app_for(role: Role) -> Flask:
    """The app of this command, built for ``role`` when our command line loads it
    (under ``flask --app``, Flask built it already, with every plugin)."""
    info = click.get_current_context().ensure_object(ScriptInfo)
    if isinstance(info, AppLoader):
        return info.load_for(role)
    return info.load_app()


class HostGroup(click.Group):
    """The host's commands, and a group per installed plugin found from metadata alone:
    a plugin is imported only when one of its commands runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        plugins = {source.name for source in _installed()} - set(self.commands)
        return [*sorted(self.commands), *sorted(plugins)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in {source.name for source in _installed()}:
            return PluginCommands(name)
        return command


class PluginCommands(click.Group):
    """``python run.py PLUGIN ...``: loads that plugin (and what it needs), nothing else."""

    def __init__(self, name: str) -> None:
        super().__init__(name, help=f"Commands of the {name} plugin.")

    def _group(self, ctx: click.Context) -> click.Group | None:
        app = _app_for(Role(COMMAND, (self.name or "",)))
        group = app.cli.commands.get(self.name or "")
        return group if isinstance(group, click.Group) else None

    def list_commands(self, ctx: click.Context) -> list[str]:
        group = self._group(ctx)
        return group.list_commands(ctx) if group else []

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        group = self._group(ctx)
        return group.get_command(ctx, name) if group else None


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """Versions from metadata: nothing is imported, so it works with broken plugins."""
    if not value or ctx.resilient_parsing:
        return
    lines = [
        f"core-app {host_version()}",
        f"Python {platform.python_version()}, Flask {version('flask')}, Celery {version('celery')}",
        *(
            f"plugin {s.name}: {s.distribution or '(no distribution)'} {s.version or ''}"
            for s in _installed()
        ),
    ]
    click.echo("\n".join(line.rstrip() for line in lines))
    ctx.exit()


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool | None) -> None:
    """``--debug``: Flask's debug flag (debugger and reloader), read by ``serve``."""
    if value is not None:
        os.environ["FLASK_DEBUG"] = "1" if value else "0"


def _use_app(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.obj = AppLoader(value)


def make_cli(app: str | None = None) -> click.Group:
    """The command group of ``python run.py`` (``app="run:app"``) or ``python -m core_app``."""

    @click.pass_context
    def default(ctx: click.Context, host: str, port: int) -> None:
        if ctx.invoked_subcommand is None:
            ctx.invoke(serve_command, host=host, port=port)

    params: list[click.Parameter] = [
        click.Option(["--host"], default="127.0.0.1", show_default=True),
        click.Option(["--port"], default=5000, type=int, show_default=True),
        click.Option(
            ["--debug/--no-debug"],
            default=None,
            expose_value=False,
            is_eager=True,
            callback=_set_debug,
            help="Serve with the debugger and reloader (development only).",
        ),
        click.Option(
            ["--version"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_print_version,
            help="Show the versions of core-app, Python, Flask, Celery and every plugin.",
        ),
    ]
    if app is None:
        params.append(
            click.Option(
                ["--app"],
                metavar="IMPORT",
                expose_value=False,
                is_eager=True,
                callback=_use_app,
                help="The app as module:name or path/to/file.py:name (default: create_app()).",
            )
        )
    cli = HostGroup(
        name="run.py" if app else "core-app",
        invoke_without_command=True,
        callback=default,
        params=params,
        context_settings={"obj": AppLoader(app)},
        help="Serve the API (the default), or run one of the commands below.",
    )
    for command in (*HOST_COMMANDS, routes_command, shell_command):
        cli.add_command(command)
    return cli


def main(app: str | None = None, argv: Sequence[str] | None = None) -> None:
    """Run the command line; with no command, serve (``python run.py``).

    :param app: import path of the app (``"run:app"``); None builds ``create_app()``.
    """
    make_cli(app).main(args=argv, prog_name="run.py" if app else "core-app")


def init_cli(app: Flask, host: PluginHost) -> None:
    """Add the host's commands and each plugin's command group to ``app.cli``."""
    for command in HOST_COMMANDS:
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
    app = _app_for(Role(lenient=True))
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
    worker_process_init.connect(_leave_sigterm_to_the_parent, weak=False)
    if all_plugins:
        app = _app_for(Role.worker())
        host: PluginHost = app.extensions["core_app"]
        queues = [r.queue for r in host.served() if r.queue]
        _celery(app).worker_main(["worker", "-Q", ",".join([*queues, DEFAULT_QUEUE]), *args])
        return
    if not args or args[0].startswith("-"):
        raise click.UsageError("Name a plugin (python run.py worker shop) or use --all.")
    name, args = args[0], args[1:]
    installed = sorted({source.name for source in _installed()})
    if name not in installed:
        known = ", ".join(installed) or "none"
        raise click.UsageError(f"No plugin named {name!r} is installed (installed: {known}).")
    app = _app_for(Role.worker([name]))
    record = _served_record(app.extensions["core_app"], name)
    hostname = [] if {"-n", "--hostname"} & set(args) else ["-n", f"{name}@%h"]
    _celery(app).worker_main(["worker", "-Q", record.queue or name, *hostname, *args])


def _leave_sigterm_to_the_parent(**kwargs: Any) -> None:
    """In each pool child: ignore SIGTERM, which the worker (its parent) handles.

    systemd, ``timeout`` and ``kill -- -PGID`` send SIGTERM to the whole process group.
    An idle prefork child waits for its next task inside the pool's shared read lock
    (billiard's ``SimpleQueue.get_payload``); killed there, it leaves the lock taken, and
    the worker's exit (``Pool._help_stuff_finish``) waits for that lock forever. This
    happens with every transport that has no event loop (the embedded broker's
    filesystem transport), about one stop in three. Ignoring SIGTERM in the children
    makes a group SIGTERM what a SIGTERM to the worker alone is, a warm shutdown: the
    parent lets running tasks finish, then ends its children. A child never outlives
    the worker: Celery gives each one ``PR_SET_PDEATHSIG`` = SIGKILL on Linux.
    """
    if sys.platform.startswith("linux"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


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
    _celery(_app_for(Role(BEAT))).start(["beat", *args])


# -- dead letters -----------------------------------------------------------------------


@click.group("deadletters")
def deadletters_command() -> None:
    """Tasks parked after MAX_DELIVERIES deliveries (a Redis list per plugin)."""


def _parked_store(app: Flask) -> Any:
    from . import deadletter

    redis_client = deadletter.client(app.config)
    if redis_client is None:
        raise click.ClickException("Dead letters are kept in Redis: no BROKER_URL is redis://.")
    return redis_client


@deadletters_command.command("list")
@click.argument("plugin", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def deadletters_list(plugin: str | None, as_json: bool) -> None:
    """List the tasks parked for PLUGIN (default: every installed plugin)."""
    from . import deadletter

    app = _app_for(Role(COMMAND, ()))
    names = [plugin] if plugin else [source.name for source in _installed()]
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
    app = _app_for(Role(COMMAND, (plugin,)))
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
    app = _app_for(Role())
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
    deadletters_command,
    db_command,
)
