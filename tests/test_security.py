"""Production safety: secrets, no debugger, JSON errors, the plugin report, and the
allowlist honoured by every process (web, worker, beat) alike."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import requests
from fakes import (
    blueprint_source,
    config,
    make_plugin_dist,
    never_import_source,
    subprocess_env,
)

from core_app import PluginConflictError, create_app
from core_app.discovery import host_version
from core_app.testing import free_port

REPO = Path(__file__).resolve().parents[1]
SECRET = secrets.token_hex(32)  # 64 characters
START_TIMEOUT = 60.0

#: A plugin whose routes fail in every way a request can.
ERRORS_BODY = """
from flask import abort, request


@blueprint.post("/json")
def takes_json():
    return {"got": request.get_json()}


@blueprint.post("/upload")
def upload():
    return {"size": len(request.get_data())}


@blueprint.get("/unsupported")
def unsupported():
    abort(415)


@blueprint.get("/unprocessable")
def unprocessable():
    abort(422)


@blueprint.get("/crash")
def crash():
    raise RuntimeError("secret internal detail in " + __file__)
"""


def _production(tmp_path: Path, paths: Sequence[Path] = (), **settings: str) -> dict[str, str]:
    """Production on one machine: the embedded broker allowed on purpose (no Redis here)."""
    return subprocess_env(
        tmp_path,
        paths,
        CORE_APP_ENV="production",
        CORE_APP_SECRET_KEY=SECRET,
        CORE_APP_ALLOW_EMBEDDED_BROKER="true",
        **settings,
    )


class Proc:
    """``python run.py ARGS`` in a session of its own, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "run.py", *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    def wait_for(self, condition, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                pytest.fail(f"exited with {self.process.returncode}:\n{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"timed out after {timeout} s:\n{self.output()}")

    def wait_for_text(self, text: str, timeout: float = START_TIMEOUT) -> None:
        self.wait_for(lambda: text in self.output(), timeout)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever is left of its session (workers' children)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


class Web(Proc):
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        super().__init__([*args, "--port", str(self.port)], env, log)

    def get(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=10)

    def serves(self) -> bool:
        try:
            return self.get("/health").status_code == 200
        except requests.RequestException:
            return False


def _refused(command: Web, timeout: float = 60) -> tuple[int, str]:
    """Wait for a command that must exit without ever serving; its status and output."""
    deadline = time.monotonic() + timeout
    try:
        while command.process.poll() is None:
            assert not command.serves(), f"it serves:\n{command.output()}"
            assert time.monotonic() < deadline, f"still running:\n{command.output()}"
            time.sleep(0.1)
    finally:
        command.stop()
    assert not command.serves()
    return command.process.returncode, command.output()


LEAKS = ("Traceback", "secret internal detail", ".py", str(REPO), "/tmp/", "<html")


def _assert_json_error(status: int, code: int, content_type: str, body: object, text: str) -> None:
    """An error response: JSON ``{error, message, status}``, nothing internal in it."""
    assert status == code, text
    assert content_type.startswith("application/json"), content_type
    assert isinstance(body, dict) and set(body) == {"error", "message", "status"}, body
    assert body["status"] == code and body["error"] and body["message"], body
    for leak in LEAKS:
        assert leak not in text, (leak, text)


def _assert_served_json_error(response: requests.Response, code: int) -> None:
    _assert_json_error(
        response.status_code, code, response.headers["Content-Type"], response.json(), response.text
    )


def _assert_client_json_error(response, code: int) -> None:
    text = response.get_data(as_text=True)
    _assert_json_error(response.status_code, code, response.content_type, response.get_json(), text)


@pytest.fixture
def crash_plugin(tmp_path):
    """A fake installed plugin ``errs`` (for subprocesses: put its path on PYTHONPATH)."""
    return make_plugin_dist(
        tmp_path / "site", "errs", blueprint_source("errs", body=ERRORS_BODY), version="0.1"
    )


# -- production: secrets and the debugger ----------------------------------------------


def test_production_refuses_the_debugger_and_never_serves(tmp_path, crash_plugin):
    env = _production(tmp_path, [crash_plugin.path], CORE_APP_PLUGINS="errs")
    status, output = _refused(Web(["--debug"], env, tmp_path / "debug.log"))
    assert status != 0, output
    assert "Production never runs the debugger" in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize(
    "args",
    [["run", "--debugger"], ["--debug", "run"]],
    ids=["run --debugger", "--debug run"],
)
def test_production_refuses_the_debugger_through_flask_run_too(tmp_path, crash_plugin, args):
    """Flask's own ``run`` command must not be a way around the rule."""
    env = _production(tmp_path, [crash_plugin.path], CORE_APP_PLUGINS="errs")
    status, output = _refused(Web(args, env, tmp_path / "debug.log"))
    assert status != 0, output
    assert "Traceback" not in output, output


def test_production_serves_json_errors_never_the_debugger(tmp_path, crash_plugin):
    env = _production(tmp_path, [crash_plugin.path], CORE_APP_PLUGINS="errs")
    web = Web([], env, tmp_path / "web.log")
    try:
        web.wait_for(web.serves)
        crash = web.get("/api/errs/crash")
        _assert_served_json_error(crash, 500)
        assert "Werkzeug Debugger" not in crash.text and "__debugger__" not in crash.text
        _assert_served_json_error(web.get("/console"), 404)  # no debugger console either
        _assert_served_json_error(web.get("/plugins"), 404)  # the plugin report is off
        assert web.get("/api/errs/ping").json() == {"plugin": "errs"}
    finally:
        web.stop()
    log = web.output()
    assert "secret internal detail" in log  # the traceback goes to the log, not the client
    assert "Debug mode: on" not in log


def test_plugins_report_is_off_in_production_unless_exposed(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE_APP_ENV", "production")
    monkeypatch.setenv("CORE_APP_SECRET_KEY", SECRET)
    monkeypatch.setenv("CORE_APP_ALLOW_EMBEDDED_BROKER", "true")
    monkeypatch.setenv("CORE_APP_DATABASE_ALLOW_SQLITE", "true")
    hidden = create_app(config(tmp_path / "hidden", ["shop"])).test_client().get("/plugins")
    _assert_client_json_error(hidden, 404)

    monkeypatch.setenv("CORE_APP_EXPOSE_PLUGINS", "true")
    shown = create_app(config(tmp_path / "shown", ["shop"])).test_client().get("/plugins")
    assert shown.status_code == 200
    assert {row["name"]: row["status"] for row in shown.get_json()}["shop"] == "loaded"

    monkeypatch.delenv("CORE_APP_ENV")
    monkeypatch.delenv("CORE_APP_EXPOSE_PLUGINS")
    development = create_app(config(tmp_path / "dev", ["shop"])).test_client()
    assert development.get("/plugins").status_code == 200


@pytest.mark.parametrize("key", [None, "short", "x" * 31], ids=["missing", "short", "31-chars"])
def test_production_without_a_real_secret_key_refuses_to_start(tmp_path, key):
    env = subprocess_env(tmp_path, CORE_APP_ENV="production", CORE_APP_PLUGINS="shop")
    if key is not None:
        env["CORE_APP_SECRET_KEY"] = key
    status, output = _refused(Web([], env, tmp_path / "web.log"))
    assert status != 0, output
    assert "core_app refused to start." in output, output
    assert "SECRET_KEY" in output and "32" in output, output
    assert "Traceback" not in output, output


# -- the allowlist, in every process ---------------------------------------------------


def test_a_plugin_not_on_the_allowlist_is_never_imported_by_any_process(tmp_path):
    marker = tmp_path / "intruder.marker"
    intruder = make_plugin_dist(tmp_path / "site", "intruder", never_import_source(marker))

    def env(name: str) -> dict[str, str]:
        return subprocess_env(
            tmp_path / name, [intruder.path], CORE_APP_PLUGINS="shop,notifications"
        )

    worker_args = ["--loglevel", "INFO", "--concurrency", "1", "--without-mingle"]
    web = Web([], env("web"), tmp_path / "web.log")
    everyone = Proc(["worker", "--all", *worker_args], env("all"), tmp_path / "all.log")
    one = Proc(["worker", "notifications", *worker_args], env("one"), tmp_path / "one.log")
    beat = Proc(["beat", "--loglevel", "INFO"], env("beat"), tmp_path / "beat.log")
    try:
        web.wait_for(web.serves)
        assert web.get("/health").json()["status"] == "ok"
        assert web.get("/api/shop/home").status_code == 200
        plugins = {row["name"]: row for row in web.get("/plugins").json()}
        assert plugins["intruder"]["status"] == "disabled", plugins["intruder"]
        everyone.wait_for_text(" ready.")
        one.wait_for_text(" ready.")
        beat.wait_for_text("beat: Starting...")
    finally:
        for proc in (web, everyone, one, beat):
            proc.stop()
    assert "notifications.send_email" in one.output()  # it did load its own tasks
    for proc in (web, everyone, one, beat):
        assert "this plugin must never be imported" not in proc.output(), proc.output()
    assert not marker.exists(), "a process imported a plugin that is not on the allowlist"


# -- error responses -------------------------------------------------------------------


@pytest.fixture
def errors_client(fake_dist, tmp_path):
    fake_dist("errs", blueprint_source("errs", body=ERRORS_BODY))
    app = create_app(config(tmp_path, ["errs"], MAX_CONTENT_LENGTH=1024, PLUGIN_ERRORS="raise"))
    return app.test_client()


@pytest.mark.parametrize(
    ("status", "call"),
    [
        (
            400,
            lambda c: c.post("/api/errs/json", data="{not json", content_type="application/json"),
        ),
        (404, lambda c: c.get("/api/errs/nothing-here")),
        (405, lambda c: c.get("/api/errs/json")),
        (413, lambda c: c.post("/api/errs/upload", data=b"x" * 4096)),
        (415, lambda c: c.get("/api/errs/unsupported")),
        (422, lambda c: c.get("/api/errs/unprocessable")),
        (500, lambda c: c.get("/api/errs/crash")),
    ],
    ids=lambda value: str(value) if isinstance(value, int) else "",
)
def test_error_statuses_answer_json_without_internals(errors_client, status, call):
    response = call(errors_client)
    _assert_client_json_error(response, status)
    if status == 405:
        assert "POST" in response.headers["Allow"]


def test_a_small_body_under_the_limit_is_accepted(errors_client):
    response = errors_client.post("/api/errs/upload", data=b"x" * 100)
    assert response.status_code == 200 and response.get_json() == {"size": 100}


# -- the host's routes and error handlers are not the plugins' to replace --------------


GRAB_HEALTH = """
def _grab(state):
    state.app.add_url_rule("/health", "health", lambda: {"status": "hijacked"})


blueprint.record(_grab)
"""

REPLACE_HANDLERS = """
@blueprint.app_errorhandler(404)
def not_found(error):
    return "<h1>not found, says the plugin</h1>", 404


@blueprint.app_errorhandler(Exception)
def any_error(error):
    return "<pre>" + repr(error) + "</pre>", 500
"""


@pytest.mark.parametrize(
    ("body", "says"),
    [(GRAB_HEALTH, ["GET /health", "host"]), (REPLACE_HANDLERS, ["app_errorhandler", "404"])],
    ids=["health route", "error handlers"],
)
def test_a_plugin_cannot_replace_the_hosts_route_or_error_handlers(fake_dist, tmp_path, body, says):
    bad = fake_dist("hijack", blueprint_source("hijack", body=body), version="6.6")
    fake_dist("good", blueprint_source("good"))
    with pytest.raises(PluginConflictError) as info:
        create_app(config(tmp_path / "strict", ["hijack", "good"], PLUGIN_ERRORS="raise"))
    message = str(info.value)
    assert info.value.plugin == "hijack" and "host" in (info.value.other or "")
    assert f"{bad.name} {bad.version}" in message and "Fix:" in message
    for text in says:
        assert text in message, (text, message)

    app = create_app(config(tmp_path / "lenient", ["hijack", "good"], PLUGIN_ERRORS="skip"))
    client = app.test_client()
    assert client.get("/health").get_json()["status"] == "ok"
    assert client.get("/api/good/ping").get_json() == {"plugin": "good"}
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.is_json
    assert "hijack" not in app.blueprints


# -- /health and /ready: statuses for anyone, details for operators --------------------


def _health_app(tmp_path: Path, broker_port: int, **settings: object):
    """Production, lenient, shop loaded, plugin ``broken`` broken, the broker down."""
    return create_app(
        config(
            tmp_path,
            ["shop", "broken"],
            ENV="production",
            SECRET_KEY=SECRET,
            BROKER_URL=f"redis://127.0.0.1:{broker_port}/0",
            PLUGIN_ERRORS="skip",
            DATABASE_ALLOW_SQLITE=True,
            **settings,
        )
    )


def test_production_health_and_ready_details_only_for_operators_who_ask(fake_dist, tmp_path):
    fake_dist("broken", "raise RuntimeError('kaboom in /srv/secret/config.py')", version="6.6")
    port = free_port()  # nothing listens: the broker check fails with host:port in its error
    client = _health_app(tmp_path / "anonymous", port).test_client()

    health = client.get("/health")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json() == {
        "status": "unavailable",
        "checks": {
            "broker": {"ok": False},
            "database": {"ok": True},
            "migrations": {"ok": False},  # never migrated implicitly in production
        },
        "plugins": {"loaded": ["shop"], "failed": [{"name": "broken"}]},
    }
    for leak in (str(port), "127.0.0.1", "redis", "kaboom", "/srv/", "6.6", host_version()):
        assert leak not in health.text + ready.text, leak

    # Operators who turn details on (behind authentication) get them all.
    client = _health_app(tmp_path / "operator", port, EXPOSE_HEALTH_DETAILS=True).test_client()
    assert client.get("/health").get_json() == {"status": "ok", "version": host_version()}
    body = client.get("/ready").get_json()
    assert str(port) in body["checks"]["broker"]["error"]
    (failed,) = body["plugins"]["failed"]
    assert failed["name"] == "broken" and "kaboom" in failed["error"] and "6.6" in failed["error"]


def test_production_health_details_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE_APP_ENV", "production")
    monkeypatch.setenv("CORE_APP_SECRET_KEY", SECRET)
    monkeypatch.setenv("CORE_APP_ALLOW_EMBEDDED_BROKER", "true")
    monkeypatch.setenv("CORE_APP_DATABASE_ALLOW_SQLITE", "true")
    hidden = create_app(config(tmp_path / "hidden", ["shop"])).test_client().get("/health")
    assert hidden.get_json() == {"status": "ok"}
    monkeypatch.setenv("CORE_APP_EXPOSE_HEALTH_DETAILS", "true")
    shown = create_app(config(tmp_path / "shown", ["shop"])).test_client().get("/health")
    assert shown.get_json() == {"status": "ok", "version": host_version()}
