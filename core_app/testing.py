"""Pytest fixtures and helpers for core_app and its plugins (a ``pytest11`` plugin).

Everything is real: a ``redis-server`` process on a free loopback port, started and
stopped by the test session, Celery workers in separate processes started with the
host's own ``worker`` command, an SMTP server on loopback. Override the
``core_app_plugins`` fixture to choose the plugins an app loads::

    @pytest.fixture
    def core_app_plugins():
        return ["billing"]

Fixtures: ``redis_server`` (session), ``redis_url`` (a flushed database),
``rabbitmq_server`` (session, a private node), ``amqp_url`` (a fresh vhost on it),
``core_app_plugins``, ``core_app_extra_plugins``, ``core_app_config``, ``make_app``,
``core_app_app``, ``core_app_client``, ``core_app_runner``, ``redis_app`` (an app on the
session's Redis), ``core_app_worker`` (a worker process for ``redis_app``'s plugins) and
``smtp_sink``; ``database_url`` (an empty database, once SQLite and once PostgreSQL) and
``db_session`` (rolled back after the test): :mod:`core_app.db_testing`. The names never
clash with pytest-flask's (``client``, ``config``...) or celery.contrib.pytest's
(``celery_worker``, ``celery_app``...), so either can be used beside them.

Helpers for tests that run the host as users do: :func:`clean_env`, :func:`run_command`,
:class:`Process`, :func:`write_plugin_dist`, :func:`child_venv`, :class:`SmtpSink`.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from .app import create_app
from .db_testing import database_url, db_session, postgres_database, postgres_server_url
from .discovery import rescan
from .servers import PostgresServer, RabbitMQServer, RedisServer, free_port, wait_until
from .smtp_sink import ReceivedMail, SmtpSink
from .testkit import Process, child_venv, clean_env, run_command, write_plugin_dist

_vhosts = itertools.count(1)

__all__ = [
    "PostgresServer",
    "Process",
    "RabbitMQServer",
    "ReceivedMail",
    "RedisServer",
    "SmtpSink",
    "child_venv",
    "clean_env",
    "database_url",
    "db_session",
    "free_port",
    "postgres_database",
    "postgres_server_url",
    "run_command",
    "wait_until",
    "write_plugin_dist",
]


def _worker_command(*args: str) -> list[str]:
    """The host's own worker entry point, as production runs it (``core-app worker``)."""
    return [sys.executable, "-m", "core_app", "worker", *args]


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the test session (append-only, so restarts lose nothing)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """A private RabbitMQ node for the test session (started on first use, ~5 s)."""
    server = RabbitMQServer().start()
    yield server
    server.remove()


@pytest.fixture
def amqp_url(rabbitmq_server: RabbitMQServer) -> str:
    """A fresh vhost on the session's RabbitMQ node for this test (started again if a
    test stopped it)."""
    if rabbitmq_server.process is None or rabbitmq_server.process.poll() is not None:
        rabbitmq_server.start()
    return rabbitmq_server.add_vhost(f"test-{os.getpid()}-{next(_vhosts)}")


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test (and started again if a test stopped it)."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture
def core_app_plugins() -> list[str] | None:
    """Names of the installed plugins the app loads; None loads every installed one."""
    return None


@pytest.fixture
def core_app_extra_plugins() -> dict[str, object]:
    """Plugin objects by name, loaded as if installed (no pip install needed)."""
    return {}


@pytest.fixture
def core_app_config() -> dict[str, Any]:
    """Extra configuration for the ``app`` fixture."""
    return {}


@pytest.fixture
def make_app(
    tmp_path: Path,
    core_app_plugins: list[str] | None,
    core_app_extra_plugins: dict[str, object],
    core_app_config: dict[str, Any],
) -> Callable[..., Flask]:
    """Build an app with the chosen plugins; keyword arguments override its config."""

    def make(**overrides: Any) -> Flask:
        rescan()
        extra = core_app_extra_plugins
        names = None if core_app_plugins is None else [*core_app_plugins, *extra]
        config = {
            "TESTING": True,
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "PLUGIN_ERRORS": "raise",
            "PLUGINS": names,
            **core_app_config,
            **overrides,
        }
        return create_app(config, plugins=extra)

    return make


@pytest.fixture
def core_app_app(make_app: Callable[..., Flask]) -> Flask:
    """An app with the chosen plugins, the embedded broker and a fresh instance folder.

    Named so that it coexists with pytest-flask, which expects a fixture ``app`` of your
    own: ``app = core_app_app`` style (``def app(core_app_app): return core_app_app``)
    hands it to pytest-flask's ``client`` and ``live_server``.
    """
    return make_app()


@pytest.fixture
def core_app_client(core_app_app: Flask) -> FlaskClient:
    return core_app_app.test_client()


@pytest.fixture
def core_app_runner(core_app_app: Flask) -> FlaskCliRunner:
    return core_app_app.test_cli_runner()


@pytest.fixture
def redis_app(make_app: Callable[..., Flask], redis_url: str) -> Flask:
    """Like ``core_app_app``, on the session's real Redis as broker and result backend."""
    return make_app(BROKER_URL=redis_url)


@pytest.fixture
def core_app_worker(redis_app: Flask, tmp_path: Path) -> Iterator[Process]:
    """A real worker process serving every queue of ``redis_app``'s plugins.

    It is started the way production starts one, ``python -m core_app worker --all``
    (the ``core-app`` console script), and builds its own app from the same settings,
    passed as ``CORE_APP_*`` variables: only installed plugins run in it, not objects
    defined in a test file. (Not ``celery_worker``: that is celery.contrib.pytest's.)
    """
    host = redis_app.extensions["core_app"]
    settings: dict[str, object] = {
        "CORE_APP_BROKER_URL": redis_app.config["BROKER_URL"],
        "CORE_APP_INSTANCE_PATH": redis_app.instance_path,
        "CORE_APP_PLUGIN_ERRORS": "raise",
    }
    if redis_app.config["PLUGINS"] is not None:
        settings["CORE_APP_PLUGINS"] = ",".join(redis_app.config["PLUGINS"])
    for key, value in redis_app.config.items():
        if value is not None and _is_plugin_key(host, key):
            settings[f"CORE_APP_{key}"] = value
    command = _worker_command(
        "--all", "--pool", "solo", "--without-gossip", "--without-mingle", "--loglevel", "INFO"
    )
    worker = Process(command, clean_env(**settings), tmp_path / "worker.log")
    worker.start(" ready.")
    yield worker
    worker.stop()


def _is_plugin_key(host: Any, key: str) -> bool:
    return any(key in record.config_keys for record in host.active(builtins=False))


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server on loopback keeping what it receives (:class:`SmtpSink`):
    give its ``url`` to the app as ``NOTIFICATIONS_SMTP_URL``."""
    with SmtpSink() as sink:
        yield sink
