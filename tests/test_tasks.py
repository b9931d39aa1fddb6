"""Routing of plugin tasks on a real Redis: one list per plugin queue, reached by name.

Messages are read straight from the Redis lists (kombu's Redis transport keeps each
queue as a list named after it), so these tests need no worker.
"""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys

import pytest
from procs import REPO, clean_env

from core_app import TaskUnavailable, send_task

EMAIL = {"to": "ada@example.com", "subject": "Hello", "body": "Hi."}


def queued(redis_server, queue: str) -> list[dict]:
    """The messages waiting on ``queue``: task name, id, and (args, kwargs)."""
    messages = []
    for raw in reversed(redis_server.client().lrange(queue, 0, -1)):  # LPUSH: oldest last
        message = json.loads(raw)
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        headers = message["headers"]
        messages.append(
            {"task": headers["task"], "id": headers["id"], "args": args, "kwargs": kwargs}
        )
    return messages


def test_each_plugin_task_goes_to_its_plugin_queue(redis_app, redis_server):
    with redis_app.app_context():
        email = send_task("notifications.send_email", kwargs=EMAIL)
        summary = send_task("shop.daily_sales_summary", kwargs={"hours": 1})

    assert queued(redis_server, "notifications") == [
        {"task": "notifications.send_email", "id": email.id, "args": [], "kwargs": EMAIL}
    ]
    assert queued(redis_server, "shop") == [
        {"task": "shop.daily_sales_summary", "id": summary.id, "args": [], "kwargs": {"hours": 1}}
    ]
    assert redis_server.client().llen("celery") == 0, "nothing on the default queue"
    host = redis_app.extensions["core_app"]
    assert host.records["notifications"].queue == "notifications"
    assert host.records["notifications"].tasks == ["notifications.send_email"]
    assert host.records["shop"].tasks == ["shop.daily_sales_summary"]


def test_a_view_calling_its_own_task_routes_to_its_queue(redis_app, redis_server):
    response = redis_app.test_client().post("/api/notifications/emails", json=EMAIL)
    assert response.status_code == 202
    [message] = queued(redis_server, "notifications")
    assert message["id"] == response.json["task_id"]
    assert message["task"] == "notifications.send_email"


def test_a_plugin_calls_another_plugins_task_by_name(redis_app, redis_server):
    client = redis_app.test_client()
    user = client.post("/api/shop/users", json={"name": "Ada", "email": "ada@example.com"})
    purchase = client.post(
        "/api/shop/purchases",
        json={"user_id": user.json["id"], "item": "tea", "quantity": 2, "price_cents": 350},
    )
    assert purchase.status_code == 201
    receipt = purchase.json["receipt"]
    assert receipt["status"] == "queued"
    [message] = queued(redis_server, "notifications")
    assert message["id"] == receipt["task_id"]
    assert message["kwargs"]["to"] == "ada@example.com"
    assert "2 x tea for 7.00" in message["kwargs"]["body"]


class TestRenamedQueue:
    @pytest.fixture
    def core_app_config(self):
        return {"PLUGIN_QUEUES": {"notifications": "mail"}}

    def test_plugin_queues_renames_a_plugins_queue(self, redis_app, redis_server):
        with redis_app.app_context():
            email = send_task("notifications.send_email", kwargs=EMAIL)
            send_task("shop.daily_sales_summary")
        assert [m["id"] for m in queued(redis_server, "mail")] == [email.id]
        assert redis_server.client().llen("notifications") == 0
        assert redis_server.client().llen("shop") == 1
        assert redis_app.extensions["core_app"].records["notifications"].queue == "mail"


def test_a_task_no_enabled_plugin_owns_is_refused(redis_app, redis_server):
    with redis_app.app_context(), pytest.raises(TaskUnavailable, match=r"billing\.charge"):
        send_task("billing.charge", kwargs={"cents": 100})
    keys = {key.decode() for key in redis_server.client().keys("*")}
    assert not {"billing", "celery"} & keys, "nothing was queued"


class TestAPluginDisabledInThisApp:
    @pytest.fixture
    def core_app_plugins(self):
        # Another app of this process (any earlier test) imported the plugin's tasks:
        # Celery then adds its shared tasks to every app made afterwards.
        importlib.import_module("core_app_notifications.tasks")
        return ["shop"]

    def test_its_imported_tasks_are_not_this_apps(self, redis_app, redis_server):
        assert "notifications.send_email" not in redis_app.extensions["celery"].tasks
        with redis_app.app_context(), pytest.raises(TaskUnavailable):
            send_task("notifications.send_email", kwargs=EMAIL)

        client = redis_app.test_client()
        user = client.post("/api/shop/users", json={"name": "Ada", "email": "ada@example.com"})
        purchase = client.post(
            "/api/shop/purchases",
            json={"user_id": user.json["id"], "item": "tea", "quantity": 1, "price_cents": 1},
        )
        assert purchase.status_code == 201
        assert purchase.json["receipt"] == {"status": "notifications plugin not available"}
        assert not redis_server.client().keys("celery") + redis_server.client().keys("notif*")


#: Run in a fresh interpreter, where no plugin module was imported before create_app.
PROBE = """
import json, sys
from core_app import roles
if sys.argv[1:]:  # what `python run.py worker NAME` declares before it imports run
    roles.assume(roles.Role.worker(sys.argv[1:]))
from run import app
from core_app import TaskUnavailable, send_task

with app.app_context():
    try:
        send_task("notifications.send_email", kwargs={"to": "a@b.c", "subject": "s", "body": "b"})
        outcome = "queued"
    except TaskUnavailable:
        outcome = "TaskUnavailable"
print(json.dumps({
    "tasks": sorted(n for n in app.extensions["celery"].tasks if not n.startswith("celery.")),
    "imported": sorted(m for m in sys.modules if m.startswith("core_app_")),
    "send_email": outcome,
}))
"""


@pytest.mark.parametrize(
    ("settings", "served", "send_email"),
    [
        pytest.param({"CORE_APP_PLUGINS": "shop"}, [], "TaskUnavailable", id="allowlist"),
        pytest.param(
            {"CORE_APP_DISABLED_PLUGINS": "notifications"}, [], "TaskUnavailable", id="denylist"
        ),
        # A worker for shop loads only shop, yet reaches the enabled notifications by name.
        pytest.param({}, ["shop"], "queued", id="shop-worker"),
    ],
)
def test_a_plugin_not_loaded_in_a_process_registers_no_task_there(
    redis_url, redis_server, tmp_path, settings, served, send_email
):
    env = clean_env(
        CORE_APP_BROKER_URL=redis_url, CORE_APP_INSTANCE_PATH=str(tmp_path / "i"), **settings
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *served],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["tasks"] == ["shop.daily_sales_summary"]
    assert not [m for m in report["imported"] if m.startswith("core_app_notifications")]
    assert "core_app_shop.tasks" in report["imported"]
    assert report["send_email"] == send_email
    expected = 1 if send_email == "queued" else 0
    assert redis_server.client().llen("notifications") == expected


def test_send_task_asks_no_result_of_a_task_that_ignores_it(redis_app, redis_server):
    """``core_app.send_task``, like ``Task.apply_async``, tells the worker whether to store
    the result (the task's ``ignore_result``, set by ``core_app_task_options``) and does
    not wait on a result channel for one that never comes."""
    with redis_app.app_context():
        email = send_task("notifications.send_email", kwargs=EMAIL)
        summary = send_task("shop.daily_sales_summary")
        asked = send_task("shop.daily_sales_summary", ignore_result=False)
    headers = {
        json.loads(raw)["headers"]["id"]: json.loads(raw)["headers"]
        for queue in ("notifications", "shop")
        for raw in redis_server.client().lrange(queue, 0, -1)
    }
    assert headers[email.id]["ignore_result"] is False
    assert headers[summary.id]["ignore_result"] is True
    assert headers[asked.id]["ignore_result"] is False
    assert summary.ignored and summary.get(timeout=1) is None
    channels = {
        key.decode() for key in redis_app.extensions["celery"].backend.result_consumer.subscribed_to
    }
    assert channels == {f"celery-task-meta-{email.id}", f"celery-task-meta-{asked.id}"}
