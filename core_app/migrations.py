"""Each plugin's Alembic migrations: its own versions folder, branch and version table.

A plugin's revisions live in its package (``<package>/migrations/``, or the folder its
``core_app_migrations`` hook names) and its first revision carries the branch label of
the plugin's name, as Invenio's modules do. Unlike Invenio (one ``alembic_version``
for every branch), each plugin records its revision in ``alembic_version_<plugin>``, as
Indico's plugins do: a plugin uninstalled later leaves a row no one has to locate, so
``db upgrade`` and ``db current`` go on working for the rest. Plugins are upgraded one
at a time in load order (the host's branch first, then dependencies before the
plugins that need them), each in a transaction of its own that is rolled back when the
upgrade changed a table the plugin does not own (compared before and after, inside the
transaction; SQLite and PostgreSQL both run DDL in transactions).

The one ``env.py`` every plugin shares is the host's (``core_app/migration_env``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import Connection, MetaData, inspect, text

from .db import Database, current_database, version_table
from .errors import PluginConflictError, PluginDeclarationError
from .plugins import PluginHost
from .records import PluginRecord
from .roles import BEAT, DB

log = logging.getLogger("core_app.migrations")

ENV_FOLDER = Path(__file__).with_name("migration_env")
LOCK_FILE = ".core_app-migrations.lock"
#: pg_advisory_xact_lock key: one migrating transaction at a time per database.
PG_LOCK_KEY = 0x636F7265  # "core"
#: Roles that never migrate on their own (``db`` commands migrate on purpose).
_NO_AUTO_UPGRADE = (BEAT, DB)


# -- where each plugin's migrations are -------------------------------------------------


def collect_migrations(database: Database, host: PluginHost, record: PluginRecord) -> None:
    """Find a plugin's versions folder (hook, else ``<package>/migrations``) and check
    that its first revision is labelled with the plugin's name."""
    declared = host.call(record, "core_app_migrations")
    if declared is None:
        folder = default_folder(record)
        if folder is None or not folder.is_dir():
            return
    elif isinstance(declared, str | Path) and Path(declared).is_dir():
        folder = Path(declared)
    else:
        raise PluginDeclarationError(
            record.name,
            f"core_app_migrations() returned {declared!r}, which is not a folder.",
            "return the path of the folder holding the plugin's Alembic revisions, e.g. "
            "Path(__file__).with_name('migrations').",
        )
    script = script_directory(folder.resolve())
    for base in script.get_bases():
        revision = script.get_revision(base)
        labels = revision.branch_labels if revision is not None else set()
        if record.name not in labels:
            raise PluginDeclarationError(
                record.name,
                f"its first migration {base} in {folder} has branch labels "
                f"{sorted(labels) or 'none'}.",
                f"set branch_labels = ({record.name!r},) in it (`python run.py db revision "
                f"{record.name} -m ...` writes it so).",
            )
    database.migrations[record.name] = folder.resolve()


def default_folder(record: PluginRecord) -> Path | None:
    """``migrations/`` beside the plugin's module (its package's folder)."""
    module = record.obj
    if not isinstance(module, ModuleType) or not getattr(module, "__file__", None):
        return None
    return Path(str(module.__file__)).parent / "migrations"


@cache
def script_directory(folder: Path) -> ScriptDirectory:
    """The revisions of one versions folder (read once per process)."""
    return ScriptDirectory(str(ENV_FOLDER), version_locations=[str(folder)])


def heads(database: Database, plugin: str) -> set[str]:
    return set(script_directory(database.migrations[plugin]).get_heads())


def current(connection: Connection, plugin: str) -> set[str]:
    """The revisions a plugin's version table holds (empty: never migrated)."""
    table = version_table(plugin)
    if not inspect(connection).has_table(table):
        return set()
    return {row[0] for row in connection.execute(text(f"SELECT version_num FROM {table}"))}


# -- the shared env.py ------------------------------------------------------------------


def alembic_config(database: Database, plugin: str, connection: Connection | None) -> Config:
    """An Alembic config for one plugin: its folder, its version table, our env.py."""
    config = Config()
    config.set_main_option("script_location", str(ENV_FOLDER))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(database.migrations[plugin]))
    config.attributes.update(
        {"core_app.database": database, "core_app.plugin": plugin, "connection": connection}
    )
    return config


def run_env(context: Any) -> None:
    """What ``migration_env/env.py`` does: migrate the plugin named in the config, on the
    connection (and in the transaction) the host opened, comparing its tables only."""
    attributes = context.config.attributes
    database: Database = attributes["core_app.database"]
    plugin: str = attributes["core_app.plugin"]
    connection: Connection = attributes["connection"]

    def include_name(name: str | None, type_: str, parents: Any) -> bool:
        return type_ != "table" or (name is not None and database.owner(name) == plugin)

    context.configure(
        connection=connection,
        target_metadata=database.metadata.get(plugin, MetaData()),
        version_table=version_table(plugin),
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


# -- upgrading and downgrading ----------------------------------------------------------


def migrate(database: Database, plugin: str, target: str, downgrade: bool = False) -> str | None:
    """Move one plugin to ``target`` in one transaction; refuse (and roll back) an
    upgrade that touches tables the plugin does not own. Returns what changed, or None."""
    engine = database.migration_engine()
    try:
        with engine.connect() as connection, connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            before_revs = current(connection, plugin)
            if target == "heads" and before_revs == heads(database, plugin):
                return None

            def foreign(table: str) -> bool:
                return database.owner(table) != plugin

            before = snapshot(connection, foreign)
            config = alembic_config(database, plugin, connection)
            (command.downgrade if downgrade else command.upgrade)(config, target)
            changed = _changes(before, snapshot(connection, foreign))
            _refuse_foreign_changes(database, plugin, changed)
            _refuse_broken_references(connection, plugin)
            after_revs = current(connection, plugin)
    finally:
        engine.dispose()
    if before_revs == after_revs:
        return None
    return f"{_revs(before_revs)} -> {_revs(after_revs)}"


def _revs(revisions: set[str]) -> str:
    return ", ".join(sorted(revisions)) or "<base>"


def snapshot(connection: Connection, keep: Callable[[str], bool]) -> dict[str, str]:
    """What the database says of each kept table: columns, keys, indexes, constraints."""
    inspector = inspect(connection)
    found = {}
    for table in inspector.get_table_names():
        if not keep(table):
            continue
        parts = {
            "columns": inspector.get_columns(table),
            "pk": inspector.get_pk_constraint(table),
            "fks": inspector.get_foreign_keys(table),
            "indexes": inspector.get_indexes(table),
            "unique": inspector.get_unique_constraints(table),
        }
        found[table] = json.dumps(parts, sort_keys=True, default=str)
    return found


def _changes(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """Tables added, removed or altered, each with what happened to it."""
    changed = {t: "created" for t in after.keys() - before.keys()}
    changed |= {t: "dropped" for t in before.keys() - after.keys()}
    changed |= {t: "altered" for t in before.keys() & after.keys() if before[t] != after[t]}
    return changed


def _refuse_foreign_changes(database: Database, plugin: str, changed: dict[str, str]) -> None:
    foreign = {t: how for t, how in changed.items() if database.owner(t) != plugin}
    if not foreign:
        return
    owners = sorted({database.owner(t) or "no plugin" for t in foreign})
    listed = ", ".join(
        f"{t} ({how}, owned by {database.owner(t) or 'no plugin'})"
        for t, how in sorted(foreign.items())
    )
    raise PluginConflictError(
        plugin,
        f"its migrations change tables it does not own: {listed}. Nothing was changed "
        "(the upgrade was rolled back).",
        f"change only tables named {plugin}_<name> in the plugin's migrations.",
        other=", ".join(owners),
    )


def _refuse_broken_references(connection: Connection, plugin: str) -> None:
    """SQLite migrates with foreign keys off (table rebuilds need it): check them now."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise PluginDeclarationError(
            plugin,
            f"after its migrations, rows break foreign keys: {broken[:5]}. Nothing was changed.",
            "fix the data migration so every reference points at an existing row.",
        )


def upgrade_all(app: Flask, host: PluginHost, plugins: list[str] | None = None) -> list[str]:
    """Upgrade each active plugin with migrations (or those named) to its heads, the
    host first, in load order; a plugin's failure is its own (strict mode raises)."""
    database = current_database(app)
    report: list[str] = []

    def one(record: PluginRecord) -> None:
        if record.name in database.migrations and (plugins is None or record.name in plugins):
            change = migrate(database, record.name, "heads")
            report.append(f"{record.name}: {change or 'at head'}")

    with migration_lock(app):
        host.each(one)
    return report


@contextlib.contextmanager
def migration_lock(app: Flask) -> Iterator[None]:
    """One migrating process per instance folder: the server, its embedded worker and
    the reloader start together; the others wait, then find the database at head."""
    path = Path(app.instance_path) / LOCK_FILE
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def auto_upgrade(app: Flask, host: PluginHost) -> None:
    """In development (``DATABASE_AUTO_UPGRADE``, on by default there), bring every
    plugin to its heads when the app is built; never in production or for beat."""
    setting = app.config["DATABASE_AUTO_UPGRADE"]
    enabled = (app.config["ENV"] != "production") if setting is None else bool(setting)
    if not enabled or host.role.kind in _NO_AUTO_UPGRADE:
        return
    database = current_database(app)
    if not database.migrations:
        return
    for line in upgrade_all(app, host):
        if not line.endswith("at head"):
            log.info("database upgraded: %s", line)


def pending(app: Flask) -> dict[str, str]:
    """Plugins whose database is not at their heads, with where it is (for /ready)."""
    database = current_database(app)
    behind = {}
    with database.engine.connect() as connection:
        for plugin in database.migrations:
            now, wanted = current(connection, plugin), heads(database, plugin)
            if now != wanted:
                behind[plugin] = f"at {_revs(now)}, head {_revs(wanted)}"
    return behind
