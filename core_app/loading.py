"""Loading the app for a role: what every command does before it touches the app.

A command declares what its process is for (:mod:`core_app.roles`) and only then loads
the app module, as Flask's ``ScriptInfo`` does, so ``app = create_app()`` in run.py
builds once, for that role. A refusal becomes one paragraph and exit status 1.
"""

from __future__ import annotations

import sys
from typing import IO, Any

import click
from flask import Flask
from flask.cli import ScriptInfo

from .config import instance_path
from .discovery import PluginSource, installed_plugins
from .errors import CoreAppError
from .roles import Role, assume


def installed() -> tuple[PluginSource, ...]:
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


def app_for(role: Role) -> Flask:
    """The app of this command, built for ``role`` when our command line loads it
    (under ``flask --app``, Flask built it already, with every plugin)."""
    info = click.get_current_context().ensure_object(ScriptInfo)
    if isinstance(info, AppLoader):
        return info.load_for(role)
    return info.load_app()
