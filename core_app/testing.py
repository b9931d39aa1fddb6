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

import asyncio
import contextlib
import importlib.util
import itertools
import json
import os
import re
import signal
import site
import subprocess
import sys
import sysconfig
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any, Self

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


def clean_env(paths: Sequence[Path] = (), /, **settings: object) -> dict[str, str]:
    """The environment for a child process: this one's without PYTHONPATH or any
    ``CORE_APP_``, ``FLASK_`` or ``WERKZEUG_`` variable (a developer's own settings must
    not leak into a test), plus ``settings``. Values that are not strings are passed as
    JSON, the way ``from_prefixed_env`` reads them; ``paths`` (folders of fake
    distributions) become PYTHONPATH.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CORE_APP_", "FLASK_", "WERKZEUG_")) and key != "PYTHONPATH"
    }
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(str(path) for path in paths)
    for key, value in settings.items():
        env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


def run_command(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | str | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end with its output captured as text (never raises on exit
    status: the test asserts on it, and shows stderr when it is wrong)."""
    return subprocess.run(
        list(command),
        env=None if env is None else dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Process:
    """A long-running command (a worker, a server) in a session of its own.

    Its output goes to a log file the test can show when something goes wrong; being a
    session leader, it and everything it started (prefork children, an embedded worker)
    can be ended by its process group id.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        cwd: Path | str | None = None,
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.log = Path(log)
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def __str__(self) -> str:
        return " ".join(self.command)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self} was never started"
        return self.process.pid

    def start(self, ready: str | Callable[[], object] | None = None, timeout: float = 60.0) -> Self:
        """Start the command; wait until ``ready`` appears in its new output (or returns
        something truthy), failing the test with the log if the process exits first."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if ready is not None:
            self.wait_for(ready, timeout)
        return self

    def wait_for(self, ready: str | Callable[[], object], timeout: float = 60.0) -> Self:
        """Wait until ``ready`` appears in the output since the start (or returns something
        truthy), failing the test with the log if the process exits first."""
        check = (lambda: ready in self.output()) if isinstance(ready, str) else ready
        wait_until(lambda: self.exited() or check(), timeout=timeout, interval=0.1)
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"{self} exited with {self.process.returncode}:\n{self.tail()}")
        return self

    def output(self) -> str:
        """What the process wrote since its (last) start."""
        if not self.log.exists():
            return ""
        return self.log.read_bytes()[self._offset :].decode(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process, wait for it, then end whatever is left of its group; a
        process that ignores the signal for ``timeout`` seconds fails the test."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"{self} ignored signal {sig} for {timeout}s:\n{self.tail()}")
        self.kill_group()
        return self.process.returncode

    def kill_group(self) -> None:
        """SIGKILL every process left in this process's group (its session)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)


def write_plugin_dist(
    site: Path,
    distribution: str,
    *,
    plugins: Mapping[str, str],
    files: Mapping[str, str] = {},
    version: str = "1.0",
    requires: Sequence[str] = ("core-app>=1.0,<2",),
) -> Path:
    """Write an installed-looking distribution into ``site``, as pip would leave it.

    ``files`` maps paths relative to ``site`` to their (dedented) source; ``plugins``
    maps entry-point names of ``core_app.plugins`` to their targets. Put ``site`` on
    ``sys.path`` or PYTHONPATH and ``importlib.metadata`` finds the plugins, so nothing
    has to be pip-installed for a test. Returns ``site``.
    """
    for relative, source in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = site / f"{re.sub(r'[-_.]+', '_', distribution)}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {distribution}",
        f"Version: {version}",
        *(f"Requires-Dist: {line}" for line in requires),
    ]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    entry_points = ["[core_app.plugins]", *(f"{k} = {v}" for k, v in plugins.items())]
    (info / "entry_points.txt").write_text("\n".join(entry_points) + "\n")
    return site


@dataclass(frozen=True)
class ReceivedMail:
    """One message an :class:`SmtpSink` accepted."""

    recipients: list[str]
    content: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def message(self) -> Message:
        return message_from_bytes(self.content)


class SmtpSink:
    """A real SMTP server on loopback (aiosmtpd) that keeps every message it accepts.

    ``answer(recipient, attempt)`` may return an SMTP reply (``"451 ..."``, ``"550 ..."``)
    to refuse a delivery instead; ``delay`` seconds pass before each reply (a slow
    server); ``port`` defaults to a free one. ``smtp_options`` go to aiosmtpd's ``SMTP``
    (TLS context, authenticator...).
    """

    def __init__(
        self,
        *,
        delay: float = 0.0,
        answer: Callable[[str, int], str | None] | None = None,
        port: int | None = None,
        **smtp_options: Any,
    ) -> None:
        self.delay = delay
        self.answer = answer
        self.received: list[ReceivedMail] = []
        #: recipient -> time.monotonic() of each delivery attempt to it (refused ones too)
        self.attempts: dict[str, list[float]] = {}
        from aiosmtpd.controller import Controller  # the test extra's: imported when used

        port = port or free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=port, **smtp_options)

    @property
    def url(self) -> str:
        """The ``smtp://`` URL of the server, for ``NOTIFICATIONS_SMTP_URL``."""
        return f"smtp://127.0.0.1:{self._controller.port}"

    @property
    def port(self) -> int:
        return int(self._controller.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        for recipient in envelope.rcpt_tos:
            tries = self.attempts.setdefault(recipient, [])
            tries.append(time.monotonic())
            refusal = self.answer and self.answer(recipient, len(tries))
            if refusal:
                return refusal
        mail = ReceivedMail(list(envelope.rcpt_tos), bytes(envelope.content), time.monotonic())
        self.received.append(mail)
        return "250 OK"

    def messages(self, to: str | None = None) -> list[Message]:
        """The messages received (those whose ``To`` is ``to``, if given), parsed."""
        parsed = [mail.message for mail in self.received]
        return [m for m in parsed if to is None or m["To"] == to]

    def __enter__(self) -> Self:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


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
