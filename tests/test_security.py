"""Production safety: secrets, no debugger, JSON errors, and the allowlist honoured by
every process (web, worker, beat) alike. What /health, /ready and /plugins tell
anonymous callers is in test_builtins.py."""

from __future__ import annotations

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
from procs import Proc, Web, production_env, run_py

from core_app import PluginConflictError, create_app

REPO = Path(__file__).resolve().parents[1]
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
    return production_env(
        paths,
        CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"),
        CORE_APP_ALLOW_EMBEDDED_BROKER="true",
        **settings,
    )


def _refused(env: dict[str, str], log: Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    """Start ``python run.py ARGS`` that must exit without ever serving; its status and
    output."""
    command = Web(env, log, *args).start(serving=False)
    deadline = time.monotonic() + timeout
    try:
        while not command.exited():
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
    status, output = _refused(env, tmp_path / "debug.log", "--debug")
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
    status, output = _refused(env, tmp_path / "debug.log", *args)
    assert status != 0, output
    assert "Traceback" not in output, output


def test_production_serves_json_errors_never_the_debugger(tmp_path, crash_plugin):
    env = _production(tmp_path, [crash_plugin.path], CORE_APP_PLUGINS="errs")
    web = Web(env, tmp_path / "web.log")
    try:
        web.start(timeout=START_TIMEOUT)
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


@pytest.mark.parametrize("key", [None, "short", "x" * 31], ids=["missing", "short", "31-chars"])
def test_production_without_a_real_secret_key_refuses_to_start(tmp_path, key):
    env = subprocess_env(tmp_path, CORE_APP_ENV="production", CORE_APP_PLUGINS="shop")
    if key is not None:
        env["CORE_APP_SECRET_KEY"] = key
    status, output = _refused(env, tmp_path / "web.log")
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
    web = Web(env("web"), tmp_path / "web.log").start(serving=False)
    everyone = Proc(run_py("worker", "--all", *worker_args), env("all"), tmp_path / "all.log")
    one = Proc(run_py("worker", "notifications", *worker_args), env("one"), tmp_path / "one.log")
    beat = Proc(run_py("beat", "--loglevel", "INFO"), env("beat"), tmp_path / "beat.log")
    for proc in (everyone, one, beat):
        proc.start()
    try:
        web.wait_for(web.serves, START_TIMEOUT)
        assert web.get("/health").json()["status"] == "ok"
        assert web.get("/api/shop/home").status_code == 200
        plugins = {row["name"]: row for row in web.get("/plugins").json()}
        assert plugins["intruder"]["status"] == "disabled", plugins["intruder"]
        everyone.wait_for(" ready.", START_TIMEOUT)
        one.wait_for(" ready.", START_TIMEOUT)
        beat.wait_for("beat: Starting...", START_TIMEOUT)
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
