"""``python run.py db ...``: each plugin's migrations, run on purpose.

A ``db`` command is a process of its own role (``db``), declared before the app is
built: the app then never migrates by itself, and ``db upgrade shop`` loads shop and
the plugins it depends on, nothing else.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from flask import Flask

from .roles import DB, Role


def _app(plugin: str | None = None) -> Flask:
    from .loading import app_for

    return app_for(Role(DB, None if plugin is None else (plugin,)))


def _database(app: Flask) -> Any:
    from .db import current_database

    return current_database(app)


def _with_migrations(app: Flask, plugin: str | None) -> list[str]:
    """The plugins to act on, in load order; a named one must have migrations."""
    database = _database(app)
    if plugin is None:
        return list(database.migrations)
    if plugin not in database.migrations:
        host = app.extensions["core_app"]
        record = host.records.get(plugin)
        if record is not None and record.failed and record.error:
            raise click.ClickException(record.error.message)
        raise click.ClickException(f"Plugin {plugin!r} has no migrations (or is not loaded).")
    return [plugin]


@click.group("db")
def db_command() -> None:
    """Each plugin's tables: upgrade, downgrade, current, history, check, revision."""


@db_command.command("upgrade")
@click.argument("plugin", required=False)
def upgrade_command(plugin: str | None) -> None:
    """Bring every plugin's tables to their latest revision; with PLUGIN, that plugin's,
    the host's and those of the plugins it depends on (what its process loads)."""
    from .errors import PluginError
    from .migrations import upgrade_all

    app = _app(plugin)
    _with_migrations(app, plugin)
    try:
        lines = upgrade_all(app, app.extensions["core_app"])
    except PluginError as error:
        raise click.ClickException(error.message) from error
    for line in lines:
        click.echo(line)
    _report_uninstalled(app)


@db_command.command("downgrade")
@click.argument("plugin")
@click.argument("revision")
def downgrade_command(plugin: str, revision: str) -> None:
    """Move PLUGIN's tables back to REVISION (``base``: drop them all)."""
    from .errors import PluginError
    from .migrations import migrate, migration_lock

    app = _app(plugin)
    _with_migrations(app, plugin)
    try:
        with migration_lock(app):
            change = migrate(_database(app), plugin, revision, downgrade=True)
    except PluginError as error:
        raise click.ClickException(error.message) from error
    click.echo(f"{plugin}: {change or 'nothing to do'}")


@db_command.command("current")
def current_command() -> None:
    """Each plugin's revision, whether it is at head, and tables left by plugins no
    longer installed."""
    from .migrations import current, heads

    app = _app()
    database = _database(app)
    with database.engine.connect() as connection:
        for plugin in database.migrations:
            now, wanted = current(connection, plugin), heads(database, plugin)
            state = "(head)" if now == wanted else f"(not at head: {_revs(wanted)})"
            click.echo(f"{plugin}: {_revs(now)} {state}")
    _report_uninstalled(app)


def _revs(revisions: set[str]) -> str:
    return ", ".join(sorted(revisions)) or "<base>"


def _report_uninstalled(app: Flask) -> None:
    """Plugins whose version table remains but which are not installed: say so, touch
    nothing (their tables keep their data until the operator drops them)."""
    from sqlalchemy import inspect, text

    from .db import owner_of

    database = _database(app)
    with database.engine.connect() as connection:
        tables = inspect(connection).get_table_names()
        for table in sorted(t for t in tables if t.startswith("alembic_version_")):
            plugin = table.removeprefix("alembic_version_")
            if plugin in database.plugins:
                continue
            revs = {row[0] for row in connection.execute(text(f"SELECT version_num FROM {table}"))}
            own = [
                t
                for t in tables
                if t.startswith(f"{plugin}_") and not owner_of(t, database.plugins)
            ]
            click.echo(
                f"{plugin}: {_revs(revs)} (not installed: its tables are left alone: "
                f"{', '.join(sorted(own)) or 'none'})"
            )


@db_command.command("history")
@click.argument("plugin", required=False)
def history_command(plugin: str | None) -> None:
    """The revisions of every plugin (or PLUGIN), newest first."""
    from alembic import command

    from .migrations import alembic_config

    app = _app(plugin)
    for name in _with_migrations(app, plugin):
        click.echo(f"{name} ({_database(app).migrations[name]}):")
        config = alembic_config(_database(app), name, None)
        config.print_stdout = lambda text, *args: click.echo("  " + (text % args if args else text))  # type: ignore[method-assign]
        command.history(config)


@db_command.command("check")
def check_command() -> None:
    """Exit 1 unless every plugin is at head and its models match its migrations."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from .db import version_table
    from .migrations import current, heads

    app = _app()
    database = _database(app)
    problems = []
    with database.engine.connect() as connection:
        for plugin, metadata in database.metadata.items():
            if plugin not in database.migrations:
                problems.append(f"{plugin}: has models but no migrations")
                continue
            if current(connection, plugin) != heads(database, plugin):
                problems.append(f"{plugin}: not at head (run `python run.py db upgrade`)")
                continue

            def include_name(name: str | None, type_: str, parents: Any, p: str = plugin) -> bool:
                return type_ != "table" or (name is not None and database.owner(name) == p)

            context = MigrationContext.configure(
                connection,
                opts={
                    "include_name": include_name,
                    "compare_type": True,
                    "version_table": version_table(plugin),
                },
            )
            for diff in compare_metadata(context, metadata):
                problems.append(f"{plugin}: models and migrations differ: {diff}")
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(1)
    click.echo(f"OK: {', '.join(database.migrations)} match their models and are at head.")


@db_command.command("revision")
@click.argument("plugin")
@click.option("-m", "--message", required=True, help="What the revision does.")
@click.option("--empty", is_flag=True, help="Write an empty revision (no autogenerate).")
def revision_command(plugin: str, message: str, empty: bool) -> None:
    """Write PLUGIN's next revision, compared against its models and tables only."""
    from alembic import command

    from .migrations import alembic_config, default_folder, script_directory

    app = _app(plugin)
    database = _database(app)
    record = app.extensions["core_app"].records[plugin]
    if plugin not in database.migrations:
        folder = default_folder(record)
        if folder is None:
            raise click.ClickException(f"Plugin {plugin!r} is not a package with a folder.")
        folder.mkdir(exist_ok=True)
        database.migrations[plugin] = folder.resolve()
    folder = database.migrations[plugin]
    first = not script_directory(folder).get_heads()
    with database.migration_engine().connect() as connection:
        config = alembic_config(database, plugin, connection)
        script = command.revision(
            config,
            message=message,
            autogenerate=not empty,
            head="base" if first else f"{plugin}@head",
            branch_label=plugin if first else None,
            version_path=str(folder),
        )
    script_directory.cache_clear()
    path = getattr(script, "path", None)
    click.echo(f"Wrote {path}")
