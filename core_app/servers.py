"""Real servers for tests: a redis-server, a RabbitMQ node or a PostgreSQL cluster of the
test's own.

Each runs on free loopback ports with its data in a folder of the test's, so a test may
stop, kill, freeze and restart it without touching the machine's own servers, and what
was durable before a restart is there after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import redis


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``condition()`` until it returns something truthy, or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {condition}")


class RedisServer:
    """A real redis-server process that a test can stop, kill and restart on one port."""

    def __init__(self, directory: Path, *, appendonly: bool = True) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not installed: apt-get install redis-server")
        self.executable = executable
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
        ]
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_until(lambda: _pings(client), timeout=10)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """The server stops answering but keeps its connections open (SIGSTOP)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class RabbitMQServer:
    """A private RabbitMQ node: own node name, AMQP and distribution ports, data and logs.

    The server drops root, so as root it runs as the ``rabbitmq`` user in a folder that
    user owns (by default a new one in the system's temporary folder: a folder under
    pytest's ``tmp_path`` is private to root). The machine's own node (and its config in
    /etc/rabbitmq) is left alone. Vhosts are made through the node's own ``rabbitmqctl``.
    """

    def __init__(self, directory: Path | None = None) -> None:
        server = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian's; /usr/sbin's wraps it
        if not Path(server).exists():
            pytest.fail("rabbitmq-server is not installed: apt-get install rabbitmq-server")
        self.server = server
        # The server user must reach its folder: pytest's tmp_path is private to root.
        self.directory = directory or Path(tempfile.mkdtemp(prefix="core-app-rabbitmq-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"core_app_test_{self.port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, vhost: str = "/") -> str:
        path = "/" if vhost == "/" else f"/{vhost}"
        return f"amqp://guest:guest@127.0.0.1:{self.port}{path}"

    def _env(self) -> dict[str, str]:
        home = str(self.directory)
        return {
            "PATH": "/usr/sbin:/usr/bin:/bin",
            "HOME": home,
            "RABBITMQ_CONF_ENV_FILE": f"{home}/rabbitmq-env.conf",
            "RABBITMQ_CONFIG_FILE": f"{home}/rabbitmq",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": f"{home}/mnesia",
            "RABBITMQ_LOG_BASE": f"{home}/log",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{home}/enabled_plugins",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _as_server_user(self, command: list[str]) -> list[str]:
        prefix = ["runuser", "-u", "rabbitmq", "--"] if os.geteuid() == 0 else []
        env = [f"{key}={value}" for key, value in self._env().items()]
        return [*prefix, "env", "-i", *env, *command]

    def start(self, timeout: float = 60.0) -> RabbitMQServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "rabbitmq-env.conf").write_text("")
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nconsumer_timeout = 3600000\n"
        )
        if os.geteuid() == 0:
            self.directory.chmod(0o755)
            shutil.chown(self.directory, "rabbitmq", "rabbitmq")
            for path in self.directory.rglob("*"):
                shutil.chown(path, "rabbitmq", "rabbitmq")
        log = (self.directory / "server.out").open("ab")
        self.process = subprocess.Popen(
            self._as_server_user([self.server]),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: _accepts(self.port) or self.process.poll() is not None, timeout)
        if self.process.poll() is not None:
            pytest.fail(f"rabbitmq-server exited:\n{self.log_tail()}")
        return self

    def log_tail(self, lines: int = 40) -> str:
        out = (self.directory / "server.out").read_text(errors="replace").splitlines()
        return "\n".join(out[-lines:])

    def _signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def remove(self) -> None:
        """Stop the node (kill it if a clean stop takes over a minute) and delete its folder."""
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)

    def stop(self) -> None:
        """A clean shutdown: durable queues and persistent messages survive it."""
        self._signal(signal.SIGTERM)
        if self.process is not None:
            self.process.wait(timeout=60)
        self.process = None

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)
        self.process = None

    def freeze(self) -> None:
        """The node stops answering but keeps its connections open (SIGSTOP)."""
        for pid in self._node_pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._node_pids():
            os.kill(pid, signal.SIGCONT)

    def _node_pids(self) -> list[int]:
        """The Erlang VM of the node (``beam.smp``), alone: ``runuser`` and the start
        script above it, once stopped and continued, no longer exit with the node, and
        a later stop would hang."""
        if self.process is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
            except (OSError, NotADirectoryError):
                continue
            command = stat.partition("(")[2].rpartition(")")[0]
            group = int(stat.rpartition(")")[2].split()[2])  # pid (comm) state ppid pgrp
            if command == "beam.smp" and group == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def restart(self) -> None:
        self.stop()
        self.start()

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl`` against this node."""
        # The script beside the server, not the /usr/sbin wrapper that sets HOME to the
        # machine node's: the node's Erlang cookie is in this node's HOME.
        ctl = str(Path(self.server).with_name("rabbitmqctl"))
        done = subprocess.run(
            self._as_server_user([ctl, "-n", self.node, *args]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def add_vhost(self, name: str) -> str:
        """A fresh vhost for ``guest``; returns its URL."""
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return self.url(name)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class PostgresServer:
    """A private PostgreSQL cluster on a free loopback port (trust authentication).

    ``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the
    ``postgres`` user in a folder that user owns (a new one in the system's temporary
    folder), as :class:`RabbitMQServer` does for ``rabbitmq``. The machine's own server
    is left alone; a test may stop and start this one.
    """

    def __init__(self, directory: Path | None = None) -> None:
        found = shutil.which("initdb") or next(
            iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)), None
        )
        if found is None:
            pytest.fail("PostgreSQL is not installed: apt-get install postgresql")
        self.bin = Path(os.path.realpath(found)).parent
        self.directory = directory or Path(tempfile.mkdtemp(prefix="core-app-postgres-"))
        self.port = free_port()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=120, cwd=self.directory
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stdout}{done.stderr}")

    def start(self) -> PostgresServer:
        data = self.directory / "data"
        if os.geteuid() == 0:
            self.directory.chmod(0o755)
            shutil.chown(self.directory, "postgres", "postgres")
        if not data.exists():
            self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        log = str(self.directory / "server.log")
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start"
        )
        return self

    def stop(self) -> None:
        """A fast shutdown (open transactions are rolled back); the data stays."""
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
