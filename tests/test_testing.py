"""The pytest plugin core_app ships (core_app.testing), as a plugin author's suite uses it.

Its fixtures are registered in every pytest run of the environment, so their names must
leave other plugins' alone: a run with pytest-flask installed and celery.contrib.pytest
enabled gets each plugin's own fixtures, all usable in one session.
"""

from __future__ import annotations

import signal
import smtplib
import sys
from pathlib import Path

import pytest

from core_app.testing import Process, SmtpSink, child_venv, clean_env, run_command, wait_until

SUITE = """
import smtplib

import pytest

from core_app import send_task

OWNERS = {
    "client": "pytest_flask",
    "config": "pytest_flask",
    "live_server": "pytest_flask",
    "celery_app": "celery.contrib.pytest",
    "celery_worker": "celery.contrib.pytest",
    "celery_config": "celery.contrib.pytest",
    "core_app_app": "core_app.testing",
    "core_app_client": "core_app.testing",
    "core_app_runner": "core_app.testing",
    "core_app_worker": "core_app.testing",
    "smtp_sink": "core_app.testing",
}


@pytest.fixture
def core_app_plugins():
    return ["shop"]


@pytest.fixture
def app(core_app_app):  # what pytest-flask's fixtures test
    return core_app_app


def test_each_fixture_is_defined_once_by_its_own_plugin(request):
    for name, module in OWNERS.items():
        definitions = request._fixturemanager.getfixturedefs(name, request.node)
        owners = [d.func.__module__ for d in definitions]
        assert len(owners) == 1 and owners[0].startswith(module), (name, owners)


def test_pytest_flask_fixtures_work_on_core_apps_app(client, config, core_app_client):
    assert client.get("/api/shop/home").json["plugin"] == "shop"
    assert core_app_client.get("/api/shop/home").json["plugin"] == "shop"
    assert config["PLUGINS"] == ["shop"]


def test_celery_contrib_pytest_fixtures_work(celery_app, celery_worker):
    @celery_app.task
    def multiply(x, y):
        return x * y

    celery_worker.reload()
    assert multiply.delay(4, 4).get(timeout=10) == 16


def test_core_apps_worker_runs_the_plugins_task(redis_app, core_app_worker):
    with redis_app.app_context():
        result = send_task("shop.daily_sales_summary")
    result.get(timeout=30)
    assert "shop.daily_sales_summary" in core_app_worker.output()


def test_core_apps_smtp_sink_keeps_what_it_receives(smtp_sink):
    with smtplib.SMTP("127.0.0.1", smtp_sink.port) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com"], "To: b@example.com\\r\\n\\r\\nHi.")
    [message] = smtp_sink.messages(to="b@example.com")
    assert message.get_payload().strip() == "Hi."
"""


@pytest.mark.slow
def test_fixtures_coexist_with_pytest_flask_and_celery_contrib_pytest(tmp_path):
    python = child_venv(tmp_path / "venv", with_pip=True)
    installed = run_command(
        [str(python), "-m", "pip", "install", "--quiet", "pytest-flask>=1.3"], timeout=300
    )
    assert installed.returncode == 0, installed.stderr
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_suite.py").write_text(SUITE)
    command = [str(python), "-m", "pytest", "-p", "celery.contrib.pytest", "-p", "no:cacheprovider"]
    result = run_command(command, clean_env(), cwd=suite, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout, result.stdout


def test_process_waits_for_ready_and_ends_its_whole_group(tmp_path):
    script = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("child", child.pid, "ready.", flush=True)
time.sleep(60)
"""
    process = Process([sys.executable, "-c", script], clean_env(), tmp_path / "log")
    child = int(process.start(" ready.").output().split()[1])
    assert process.stop() == -signal.SIGTERM
    wait_until(lambda: not Path(f"/proc/{child}").exists(), timeout=10)  # SIGKILLed with it


def test_clean_env_drops_the_developers_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("CORE_APP_BROKER_URL", "redis://elsewhere")
    monkeypatch.setenv("FLASK_DEBUG", "1")
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    env = clean_env([tmp_path], CORE_APP_PLUGINS=["shop"], CORE_APP_TESTING=True)
    assert "CORE_APP_BROKER_URL" not in env and "FLASK_DEBUG" not in env
    assert env["PYTHONPATH"] == str(tmp_path)
    assert env["CORE_APP_PLUGINS"] == '["shop"]' and env["CORE_APP_TESTING"] == "true"


def test_smtp_sink_can_refuse_a_delivery_once():
    def answer(recipient: str, attempt: int) -> str | None:
        return "451 4.3.0 Try again later" if attempt == 1 else None

    with SmtpSink(answer=answer) as sink, smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        with pytest.raises(smtplib.SMTPDataError):
            smtp.sendmail("a@example.com", ["b@example.com"], "Subject: x\r\n\r\nHi.")
        smtp.sendmail("a@example.com", ["b@example.com"], "Subject: x\r\n\r\nHi.")
    assert [mail.recipients for mail in sink.received] == [["b@example.com"]]
    assert [len(tries) for tries in sink.attempts.values()] == [2]
