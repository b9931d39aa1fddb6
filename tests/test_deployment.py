"""The production deployment as the README gives it, run for real.

- The README's gunicorn command line, started as written (only the bind address changed),
  keeps answering ``/health`` within a couple of seconds while 50 clients hold connections
  open, some idle, some sending a request line a byte at a time.
- A production server answers unusable JSON bodies with 400, and its health routes tell
  an anonymous caller nothing about versions, errors or the broker.
- Production without a broker refuses to start and says how to configure Redis.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from procs import Proc, Web, clean_env, production_env, run_py

from core_app.testing import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]

IDLE_CLIENTS = 25
SLOW_CLIENTS = 25
#: A /health answer slower than this counts as a stall.
ANSWER_WITHIN = 2.0


def readme_gunicorn_command() -> list[str]:
    """The web server's command line in the README's "Production deployment" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Production deployment", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    (line,) = [line for line in block.splitlines() if line.startswith("gunicorn ")]
    return shlex.split(line, comments=True)


def _local(command: list[str], port: int) -> list[str]:
    """The same command bound to a free loopback port, run by this interpreter."""
    assert "--bind" in command, command
    args = list(command[1:])
    args[args.index("--bind") + 1] = f"127.0.0.1:{port}"
    return [sys.executable, "-m", "gunicorn", *args]


def readme_production_env(tmp_path: Path, redis_url: str, **more: str) -> dict[str, str]:
    return production_env(
        CORE_APP_BROKER_URL=redis_url,
        CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"),
        CORE_APP_PLUGINS="shop,notifications",
        CORE_APP_NOTIFICATIONS_ALLOWED_RECIPIENTS="@example.org",
        CORE_APP_DATABASE_ALLOW_SQLITE="true",  # one machine: the shop's tables in SQLite
        **more,
    )


def db_upgrade(env: dict[str, str]) -> None:
    """The README's release step: production never migrates by itself."""
    done = subprocess.run(run_py("db", "upgrade"), cwd=REPO, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def _healthy(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def idle_and_slow_clients(port: int) -> Iterator[None]:
    """Hold IDLE_CLIENTS silent connections and SLOW_CLIENTS that send a request line one
    byte every half second (never finishing it while the test runs)."""
    sockets: list[socket.socket] = []
    stop = threading.Event()
    partial = b"GET /api/shop/users HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"x" * 200

    def dribble(sock: socket.socket) -> None:
        for index in range(len(partial)):
            if stop.wait(0.5):
                return
            try:
                sock.sendall(partial[index : index + 1])
            except OSError:
                return

    threads = []
    try:
        for number in range(IDLE_CLIENTS + SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sockets.append(sock)
            if number % 2:  # interleaved, so every worker gets both kinds
                thread = threading.Thread(target=dribble, args=(sock,), daemon=True)
                thread.start()
                threads.append(thread)
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        for sock in sockets:
            sock.close()


def test_the_readme_gunicorn_command_keeps_serving_with_50_idle_or_slow_clients(
    tmp_path, redis_url
):
    command = readme_gunicorn_command()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = readme_production_env(tmp_path, redis_url)
    db_upgrade(env)
    server = Proc(_local(command, port), env, tmp_path / "g.log")
    server.start(lambda: _healthy(base + "/health"))
    try:
        # Let every worker finish booting before the clients arrive.
        wait_until(lambda: server.output().count("Booting worker") >= 2, timeout=30)
        time.sleep(1.0)
        with idle_and_slow_clients(port):
            time.sleep(0.5)
            timings = []
            deadline = time.monotonic() + 7  # past gthread's 5 s wait for a first byte
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    health = requests.get(base + "/health", timeout=ANSWER_WITHIN + 3)
                except requests.RequestException as exc:
                    pytest.fail(f"/health did not answer with 50 clients connected: {exc!r}")
                took = time.monotonic() - started
                timings.append(took)
                assert health.status_code == 200 and health.json() == {"status": "ok"}
                assert took < ANSWER_WITHIN, (f"/health took {took:.1f} s", timings)
                time.sleep(0.5)
            created = requests.post(
                base + "/api/shop/users",
                json={"name": "Ann", "email": "ann@example.org"},
                timeout=ANSWER_WITHIN,
            )
            assert created.status_code == 201, created.text
        assert len(timings) >= 8, timings
    finally:
        server.stop()
    assert "WORKER TIMEOUT" not in server.output(), server.tail()


def test_production_server_answers_unusable_json_with_400_and_no_details(tmp_path, redis_url):
    env = readme_production_env(tmp_path, redis_url)
    db_upgrade(env)
    web = Web(env, tmp_path / "web.log").start()
    try:
        deep = "[" * 1000 + "]" * 1000
        lone = '{"name": "Ann \\ud800", "email": "ann@example.org"}'
        lone_email = '{"to": "ann@example.org", "subject": "\\udfff", "body": "Hi"}'
        for url, body in [
            ("/api/shop/users", deep),
            ("/api/shop/purchases", deep),
            ("/api/notifications/emails", deep),
            ("/api/shop/users", lone),
            ("/api/notifications/emails", lone_email),
        ]:
            response = web.post(url, data=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, (url, response.status_code, response.text)
            answer = response.json()
            assert answer["status"] == 400 and answer["error"] and answer["message"], answer
        assert web.get("/api/shop/users").json() == {"users": []}

        assert web.get("/health").json() == {"status": "ok"}
        ready = web.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {
                "broker": {"ok": True},
                "database": {"ok": True},
                "migrations": {"ok": True},
            },
            "plugins": {"loaded": ["notifications", "shop"], "failed": []},
        }
    finally:
        web.stop()
    log = web.output()
    assert "RecursionError" not in log and "UnicodeEncodeError" not in log, log


def test_production_without_a_broker_refuses_to_start_and_says_how(tmp_path):
    env = clean_env(
        CORE_APP_ENV="production",
        CORE_APP_SECRET_KEY=secrets.token_hex(),
        CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"),
        CORE_APP_PLUGINS="shop",
    )
    port = free_port()
    refused = Proc(run_py("--port", str(port)), env, tmp_path / "web.log").start()
    try:
        wait_until(refused.exited, timeout=30)
    finally:
        served = _healthy(f"http://127.0.0.1:{port}/health")
        refused.stop()
    output = refused.output()
    assert not served, output
    assert refused.process is not None and refused.process.returncode == 1, output
    assert "core_app refused to start." in output, output
    assert "CORE_APP_BROKER_URL=redis://host:6379/0" in output, output
    assert "CORE_APP_ALLOW_EMBEDDED_BROKER=true" in output, output
    assert "Traceback" not in output, output

    env |= {"CORE_APP_ALLOW_EMBEDDED_BROKER": "true", "CORE_APP_DATABASE_ALLOW_SQLITE": "true"}
    allowed = Web(env, tmp_path / "ok.log")
    allowed.start()
    try:
        assert allowed.get("/api/shop/home").status_code == 200
    finally:
        allowed.stop()
