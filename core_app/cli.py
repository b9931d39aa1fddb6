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

import os
import platform
from collections.abc import Sequence
from importlib.metadata import version

import click
from flask import Flask
from flask.cli import routes_command, shell_command

from .commands import HOST_COMMANDS, serve_command
from .discovery import host_version
from .errors import PluginConflictError
from .loading import AppLoader, app_for, installed
from .plugins import PluginHost
from .records import PluginRecord
from .roles import COMMAND, Role


class HostGroup(click.Group):
    """The host's commands, and a group per installed plugin found from metadata alone:
    a plugin is imported only when one of its commands runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        plugins = {source.name for source in installed()} - set(self.commands)
        return [*sorted(self.commands), *sorted(plugins)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in {source.name for source in installed()}:
            return PluginCommands(name)
        return command


class PluginCommands(click.Group):
    """``python run.py PLUGIN ...``: loads that plugin (and what it needs), nothing else."""

    def __init__(self, name: str) -> None:
        super().__init__(name, help=f"Commands of the {name} plugin.")

    def _group(self, ctx: click.Context) -> click.Group | None:
        app = app_for(Role(COMMAND, (self.name or "",)))
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
            for s in installed()
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
