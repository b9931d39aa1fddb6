"""Pytest fixtures for core_app and its plugins (installed as a ``pytest11`` plugin).

Everything is real: a ``redis-server`` process on a free loopback port, started and
stopped by the test session, and Celery workers in separate processes. Override the
``core_app_plugins`` fixture to choose the plugins an app loads::

    @pytest.fixture
    def core_app_plugins():
        return ["billing"]

Fixtures: ``redis_server`` (session), ``redis_url`` (a flushed database),
``rabbitmq_server`` (session, a private node), ``amqp_url`` (a fresh vhost on it),
``core_app_plugins``, ``core_app_extra_plugins``, ``core_app_config``, ``make_app``, ``app``,
``client``, ``runner``, ``redis_app`` (an app on the session's Redis) and
``celery_worker`` (a worker process for ``redis_app``'s plugins); ``database_url`` (an
empty database, once SQLite and once PostgreSQL) and ``db_session`` (rolled back after the
test): :mod:`core_app.db_testing`.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import signal
import site
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from .app import create_app
from .db_testing import database_url, db_session, postgres_database, postgres_server_url
from .discovery import rescan
from .servers import PostgresServer, RabbitMQServer, RedisServer, free_port, wait_until

_vhosts = itertools.count(1)

__all__ = [
    "PostgresServer",
    "RabbitMQServer",
    "RedisServer",
    "WorkerProcess",
    "child_venv",
    "database_url",
    "db_session",
    "free_port",
    "postgres_database",
    "postgres_server_url",
    "wait_until",
]


def child_venv(path: Path, *, with_pip: bool = False) -> Path:
    """A throwaway virtualenv at ``path`` that sees the *running* environment's packages.

    ``--system-site-packages`` would expose the base interpreter's site-packages, not
    those of the environment running now (a tox env, a developer's venv), where core_app
    is installed. Instead, a ``.pth`` file in the new environment's site-packages adds
    each site-packages folder of the running environment with ``site.addsitedir``, which
    also runs their own ``.pth`` files (editable installs). What is installed into the new
    environment comes first on its ``sys.path`` and is invisible outside it. With
    ``with_pip`` it gets its own pip. Returns the path of its ``python``.
    """
    path = Path(path)
    if importlib.util.find_spec("virtualenv") is not None:  # bundles pip: needs no ensurepip
        seed = [] if with_pip else ["--no-seed"]
        command = [sys.executable, "-m", "virtualenv", "--quiet", *seed, str(path)]
    else:
        seed = [] if with_pip else ["--without-pip"]
        command = [sys.executable, "-m", "venv", *seed, str(path)]
    made = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {made.returncode}:\n{made.stderr}")
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    sites = [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    if site.ENABLE_USER_SITE:
        sites.append(site.getusersitepackages())
    wanted = {os.path.realpath(folder) for folder in sites}
    ordered = (os.path.realpath(entry) for entry in sys.path if entry)  # in sys.path's order
    folders = [f for f in dict.fromkeys(ordered) if f in wanted and os.path.isdir(f)]
    line = "import site; " + "; ".join(f"site.addsitedir({f!r})" for f in folders)
    (Path(purelib) / "_core_app_running_env.pth").write_text(line + "\n")
    return python


class WorkerProcess:
    """A command (``python run.py worker shop``, a Celery worker...) in its own process."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.command = list(command)
        self.env = {**os.environ, **env}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: str = " ready.", timeout: float = 60.0) -> WorkerProcess:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(lambda: ready in self.output(offset) or self._died(), timeout=timeout)
        if self._died():
            pytest.fail(f"{' '.join(self.command)} exited:\n{self.output()}")
        return self

    def output(self, offset: int = 0) -> str:
        if not self.log.exists():
            return ""
        return self.log.read_bytes()[offset:].decode(errors="replace")

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def worker_command(*args: str) -> list[str]:
    """Command line of a worker built by :func:`main` from ``CORE_APP_*`` variables."""
    return [sys.executable, "-m", "core_app.testing", *args]


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m core_app.testing worker ...``: Celery's CLI on ``create_app()``."""
    app = create_app()
    app.extensions["celery"].start([*(argv or sys.argv[1:])])


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
def app(make_app: Callable[..., Flask]) -> Flask:
    """An app with the chosen plugins, the embedded broker and a fresh instance folder."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def redis_app(make_app: Callable[..., Flask], redis_url: str) -> Flask:
    """Like ``app``, on the session's real Redis as broker and result backend."""
    return make_app(BROKER_URL=redis_url)


@pytest.fixture
def celery_worker(redis_app: Flask, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real Celery worker process serving every queue of ``redis_app``'s plugins.

    It builds its own app from the same settings (passed as ``CORE_APP_*`` variables),
    so only installed plugins run in it, not objects defined in a test file.
    """
    host = redis_app.extensions["core_app"]
    queues = [r.queue for r in host.active(builtins=False) if r.queue] + ["celery"]
    env = {
        "CORE_APP_BROKER_URL": redis_app.config["BROKER_URL"],
        "CORE_APP_INSTANCE_PATH": redis_app.instance_path,
        "CORE_APP_PLUGIN_ERRORS": "raise",
    }
    if redis_app.config["PLUGINS"] is not None:
        env["CORE_APP_PLUGINS"] = ",".join(redis_app.config["PLUGINS"])
    namespaced = {k: v for k, v in redis_app.config.items() if _is_plugin_key(host, k)}
    for key, value in namespaced.items():
        if value is not None:
            env[f"CORE_APP_{key}"] = value if isinstance(value, str) else json.dumps(value)
    worker = WorkerProcess(
        worker_command(
            "worker",
            "-Q",
            ",".join(queues),
            "--pool",
            "solo",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ),
        env,
        tmp_path / "worker.log",
    ).start()
    yield worker
    worker.stop()


def _is_plugin_key(host: Any, key: str) -> bool:
    return any(key in record.config_keys for record in host.active(builtins=False))


if __name__ == "__main__":
    main()
