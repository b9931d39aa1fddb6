"""The database of an app: one engine per process, a session per app context, and which
plugin owns which table.

All plugins share one database (``DATABASE_URL``; by default SQLite in the instance
folder). Names stay apart by prefix: every table of plugin ``shop`` is named
``shop_...`` (the host's own are ``core_app_...``), which works the same on SQLite and
PostgreSQL, and tells the owner of any table found in the database, even one whose
plugin is gone. A plugin declares its tables with :hook:`core_app_models` (a
``MetaData`` made by :func:`plugin_metadata`); two plugins declaring one table, a table
outside the plugin's prefix and a foreign key to a plugin it does not depend on are
refused at start-up.

Engines are made on first use in each process and forgotten in a forked child
(gunicorn workers, Celery's prefork pool), so no connection is ever shared across a
fork. Views and tasks call :func:`session`: one per app context, closed when the
context ends (every task runs in one).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, has_app_context
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from .config import is_production
from .errors import ConfigError, PluginConflictError, PluginDeclarationError
from .plugins import PluginHost
from .records import PluginRecord
from .roles import BEAT

#: Constraint and index names carry their table's name, so they carry its prefix too
#: (PostgreSQL index names are unique per schema, not per table).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLITE_FILE = "core_app.sqlite3"
EXTENSION = "core_app.db"
#: Seconds a SQLite connection waits for another writer before "database is locked".
SQLITE_BUSY_SECONDS = 30

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def plugin_metadata() -> MetaData:
    """The ``MetaData`` a plugin's declarative base uses (host naming convention)."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def version_table(plugin: str) -> str:
    """Each plugin's Alembic version table: an uninstalled plugin's row bothers no one."""
    return f"alembic_version_{plugin}"


def owner_of(table: str, plugins: Iterable[str]) -> str | None:
    """The plugin whose prefix a table name carries (the longest one), else None."""
    if table.startswith("alembic_version_"):
        name = table.removeprefix("alembic_version_")
        return name if name in set(plugins) else None
    matching = [p for p in plugins if table.startswith(f"{p}_")]
    return max(matching, key=len) if matching else None


class Database:
    """The database of one app: its URL, its tables by owner and, per process, its engine."""

    def __init__(self, url: URL, options: Mapping[str, Any], plugins: Iterable[str]) -> None:
        self.url = url
        self.options = dict(options)
        #: Every installed plugin's name (and the host's): the prefixes in use.
        self.plugins = sorted(set(plugins))
        self.metadata: dict[str, MetaData] = {}
        self.owners: dict[str, str] = {}
        #: Versions folder of each plugin that has migrations, in load order.
        self.migrations: dict[str, Path] = {}
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        #: monotonic time before which the web does not try the broker after a commit.
        self.broker_down_until = 0.0

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def engine(self) -> Engine:
        """This process's engine, made on first use (a forked child makes its own)."""
        if self._engine is None:
            self._engine = make_engine(self.url, self.options)
            self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        return self._engine

    def session(self) -> Session:
        """A new session; prefer :func:`session`, which closes it for you."""
        self.engine  # noqa: B018 (makes the session factory)
        assert self._sessions is not None
        return self._sessions()

    @contextlib.contextmanager
    def rolled_back(self) -> Iterator[Session]:
        """Every session of this app, until the end of the block, inside one transaction
        that is then rolled back: each commit is a savepoint (tests' isolation)."""
        with self.engine.connect() as connection:
            outer = connection.begin()
            factory, self._sessions = (
                self._sessions,
                sessionmaker(
                    connection, join_transaction_mode="create_savepoint", expire_on_commit=False
                ),
            )
            try:
                yield self._sessions()
            finally:
                self._sessions = factory
                if has_app_context():  # a session() made inside the block is done with
                    _close_session()
                outer.rollback()

    def migration_engine(self) -> Engine:
        """An engine without a pool for migrations; on SQLite with foreign keys off, as
        Alembic's table rebuilds need (each plugin's upgrade is checked afterwards)."""
        return make_engine(self.url, {}, poolclass=NullPool, foreign_keys=False)

    def owner(self, table: str) -> str | None:
        return self.owners.get(table) or owner_of(table, self.plugins)


def make_engine(
    url: URL, options: Mapping[str, Any], *, poolclass: Any = None, foreign_keys: bool = True
) -> Engine:
    """An engine for ``url``; on SQLite: WAL, foreign keys, a busy timeout, and every
    transaction begun with ``BEGIN IMMEDIATE`` (writers queue instead of failing when a
    read turns into a write, as Rails and Django do) and DDL inside transactions."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True, **options}
    if poolclass is not None:
        kwargs["poolclass"] = poolclass
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite:
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_SECONDS)
    engine = create_engine(url, **kwargs)
    if sqlite:
        _sqlite_pragmas(engine, foreign_keys, in_memory=url.database in (None, "", ":memory:"))
    _engines.add(engine)
    return engine


def _sqlite_pragmas(engine: Engine, foreign_keys: bool, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver begins nothing by itself
        if not in_memory:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        dbapi_connection.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _forget_engines_after_fork() -> None:
    """In a forked child, drop the parent's pooled connections without closing them
    (they are the parent's): the child opens its own on first use."""
    for engine in list(_engines):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_engines_after_fork)


# -- the app's database -----------------------------------------------------------------


def database_url(app: Flask) -> URL:
    """``DATABASE_URL``, else SQLite in the instance folder."""
    raw = app.config["DATABASE_URL"]
    url = make_url(raw) if raw else make_url(f"sqlite:///{Path(app.instance_path) / SQLITE_FILE}")
    if is_production(app) and app.config["DATABASE_AUTO_UPGRADE"]:
        raise ConfigError(
            "Production never migrates implicitly: unset CORE_APP_DATABASE_AUTO_UPGRADE "
            "and run `python run.py db upgrade` as a release step."
        )
    return url


def init_db(app: Flask, host: PluginHost) -> Database:
    """Make the app's database and collect every active plugin's tables and migrations;
    in development, bring them to their heads (:mod:`core_app.migrations`)."""
    database = Database(database_url(app), app.config["DATABASE_ENGINE_OPTIONS"], [*host.records])
    app.extensions[EXTENSION] = database
    app.teardown_appcontext(_close_session)
    if host.role.kind == BEAT:  # beat sends tasks by name: it needs no table
        return database
    from .migrations import auto_upgrade, collect_migrations
    from .outbox import init_outbox

    host.each(lambda record: collect_tables(database, host, record))
    host.each(lambda record: collect_migrations(database, host, record))
    _refuse_sqlite_in_production(app, host, database)
    init_outbox(app)
    auto_upgrade(app, host)
    return database


def _refuse_sqlite_in_production(app: Flask, host: PluginHost, database: Database) -> None:
    """Plugins with tables need a database every process reaches: in production,
    SQLite only when ``DATABASE_ALLOW_SQLITE`` says it was chosen on purpose."""
    if not is_production(app) or not database.is_sqlite or app.config["DATABASE_ALLOW_SQLITE"]:
        return
    with_data = sorted(
        name
        for name in {*database.metadata, *database.migrations}
        if not host.records[name].builtin
    )
    if with_data:
        raise ConfigError(
            f"Production needs a database every process can reach: plugins "
            f"{', '.join(with_data)} keep tables, and "
            + (
                "no DATABASE_URL is set, so"
                if not app.config["DATABASE_URL"]
                else "DATABASE_URL is"
            )
            + " SQLite is a file on this machine only. Set "
            "CORE_APP_DATABASE_URL=postgresql+psycopg://user@host/dbname, or "
            "CORE_APP_DATABASE_ALLOW_SQLITE=true for a one-machine deployment."
        )


def collect_tables(database: Database, host: PluginHost, record: PluginRecord) -> None:
    """Check and record the tables a plugin declares with ``core_app_models``."""
    declared = host.call(record, "core_app_models")
    if declared is None:
        return
    if not isinstance(declared, MetaData):
        raise PluginDeclarationError(
            record.name,
            f"core_app_models() returned {declared!r}.",
            "return the MetaData of your models' declarative base (Base.metadata), made "
            "with core_app.db.plugin_metadata().",
        )
    for table in declared.tables.values():
        _check_table_name(database, record, table.name, table.schema)
    for table in declared.tables.values():
        for key in table.foreign_keys:
            _check_reference(database, host, record, table.name, key.target_fullname)
    database.metadata[record.name] = declared
    for name in declared.tables:
        database.owners[name] = record.name


def _check_table_name(
    database: Database, record: PluginRecord, table: str, schema: str | None
) -> None:
    prefix = f"{record.name}_"
    declared_by = database.owners.get(table)
    namespace = owner_of(table, database.plugins)
    other = declared_by or (namespace if namespace != record.name else None)
    if other is not None:
        raise PluginConflictError(
            record.name,
            f"its table {table!r} is declared by plugin {other!r} too"
            + ("." if declared_by else f" (names starting {other}_ are {other}'s)."),
            f"name the plugin's tables {prefix}<name>; one table belongs to one plugin.",
            other=f"plugin {other!r}",
        )
    if schema is not None or not table.startswith(prefix) or table == prefix:
        raise PluginDeclarationError(
            record.name,
            f"its table {table!r} is not named {prefix}<name> in the default schema.",
            f"rename it {prefix}{table}: every table of a plugin "
            "carries its name, so plugins sharing one database never collide.",
        )


def _check_reference(
    database: Database, host: PluginHost, record: PluginRecord, table: str, target: str
) -> None:
    """A foreign key may point at the plugin's own tables, the host's, or those of a
    plugin it declares in ``core_app_dependencies`` (whose migrations run first)."""
    referred = target.rsplit(".", 1)[0]
    owner = database.owner(referred)
    builtin = host.records.get(owner or "")
    if owner == record.name or owner in record.dependencies or (builtin and builtin.builtin):
        return
    raise PluginDeclarationError(
        record.name,
        f"its table {table!r} has a foreign key to {target!r}, which "
        + (f"belongs to plugin {owner!r}" if owner else "no plugin owns")
        + ", not a plugin it depends on.",
        f"declare {owner!r} in core_app_dependencies() so its tables exist first, or "
        "drop the foreign key."
        if owner
        else "point it at a table of a plugin you depend on.",
    )


# -- sessions ---------------------------------------------------------------------------


def current_database(app: Flask | None = None) -> Database:
    database: Database = (app or current_app).extensions[EXTENSION]
    return database


def session() -> Session:
    """The session of the current app context (a request, a task, ``app.app_context()``),
    opened on first use and closed when the context ends; commit what you want kept."""
    found: Session | None = g.get("_core_app_session")
    if found is None:
        found = g._core_app_session = current_database().session()
    return found


def _close_session(exc: BaseException | None = None) -> None:
    found: Session | None = g.pop("_core_app_session", None)
    if found is not None:
        found.close()
