"""Workers per plugin: ``python run.py worker PLUGIN`` consumes that plugin's queue only
and imports that plugin's task modules only, on Redis and on RabbitMQ."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from faultkit import broker_fixture  # noqa: F401 (the broker fixture)
from procs import REPO, clean_env, run_py, worker

from core_app import send_task

EMAIL = {"to": "ada@example.com", "subject": "Hello", "body": "Hi."}


def inspect(env: dict[str, str], command: str, *destinations: str) -> dict[str, object]:
    """``celery -A run:celery inspect COMMAND --json`` against the named workers."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "run:celery",
            "inspect",
            command,
            "--json",
            "--timeout",
            "10",
            "--destination",
            ",".join(destinations),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_plugin_worker_leaves_other_plugins_tasks_queued(broker, make_app, tmp_path):
    def env(name: str) -> dict[str, str]:
        return clean_env(**broker.env(), CORE_APP_INSTANCE_PATH=str(tmp_path / name))

    app = make_app(**broker.config())
    celery = app.extensions["celery"]
    shop = worker("shop", env("shop"), tmp_path / "shop.log")
    try:
        with app.app_context():
            email = send_task("notifications.send_email", kwargs=EMAIL)
            summary = send_task("shop.daily_sales_summary", ignore_result=False)
        assert summary.get(timeout=20) == {"hours": 24, "purchases": 0, "total_cents": 0}
        time.sleep(1.5)  # the shop worker has been consuming for a while now
        assert broker.waiting("notifications") == 1
        assert celery.AsyncResult(email.id).state == "PENDING"

        notifications = worker("notifications", env("notifications"), tmp_path / "n.log")
        try:
            result = email.get(timeout=20)
            assert result["transport"] == "outbox"
            assert (tmp_path / "notifications" / "outbox" / f"{email.id}.eml").is_file()
            assert not (tmp_path / "shop" / "outbox").exists()

            # run.py names each worker PLUGIN@HOST.
            nodes = {name: f"{name}@{socket.gethostname()}" for name in ("shop", "notifications")}
            registered = inspect(env("inspect"), "registered", *nodes.values())
            assert registered == {
                nodes["shop"]: ["shop.daily_sales_summary"],
                nodes["notifications"]: ["notifications.send_email"],
            }
            queues = celery.control.inspect(list(nodes.values()), timeout=5).active_queues()
            assert {node: [q["name"] for q in qs] for node, qs in queues.items()} == {
                nodes["shop"]: ["shop"],
                nodes["notifications"]: ["notifications"],
            }
        finally:
            notifications.stop()
    finally:
        shop.stop()
    assert "notifications.send_email" not in shop.output(), "the shop worker never saw it"


@pytest.mark.parametrize(
    ("plugin", "settings", "message"),
    [
        ("billing", {}, "No plugin named 'billing' is installed"),
        ("shop", {"CORE_APP_DISABLED_PLUGINS": "shop"}, "Plugin 'shop' is disabled"),
    ],
)
def test_a_worker_for_a_plugin_that_cannot_run_refuses_to_start(
    redis_url, tmp_path, plugin, settings, message
):
    env = clean_env(CORE_APP_BROKER_URL=redis_url, CORE_APP_INSTANCE_PATH=str(tmp_path), **settings)
    done = subprocess.run(
        run_py("worker", plugin), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert message in done.stderr
