"""RabbitMQ as the broker: settings, publisher confirms, durable queues, beat, results.

The fault tests (SIGKILLed workers, restarts, outages, a frozen broker) run on both
brokers through ``faultkit.broker``; this file covers what only RabbitMQ has. Servers
are real: the session's private RabbitMQ node, a fresh vhost per test (``amqp_url``).
"""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
from faultkit import broker_fixture  # noqa: F401 (the broker fixture)
from kombu import Connection
from procs import Proc, clean_env, run_py, wait_for, worker, write_plugin_dist

from core_app import BrokerUnavailable, ConfigError, Role, create_app, send_task
from core_app.celery_app import CONSUMER_TIMEOUT, WEB_SOCKET_TIMEOUT, WORKER_SOCKET_TIMEOUT
from core_app.worker_start import become_worker

EMAIL = {"to": "ada@example.com", "subject": "Hello", "body": "Hi."}
#: Settings only: nothing connects until a task is sent.
AMQP = "amqp://guest:guest@127.0.0.1:1/none"


def celery_app(tmp_path, role: Role | None = None, **config):
    settings = {"TESTING": True, "INSTANCE_PATH": str(tmp_path), **config}
    return create_app(settings, role=role).extensions["celery"]


def conf(tmp_path, role: Role | None = None, **config):
    return celery_app(tmp_path, role, **config).conf


def test_amqp_processes_confirm_publishes_and_bound_every_wait(tmp_path):
    config = {"BROKER_URL": AMQP, "RESULT_BACKEND": "redis://127.0.0.1:1/0"}
    web = conf(tmp_path, **config)
    workers = conf(tmp_path, Role.worker(["notifications"]), **config)
    assert web.broker_transport_options == {
        "confirm_publish": True,
        "read_timeout": WEB_SOCKET_TIMEOUT,
        "write_timeout": WEB_SOCKET_TIMEOUT,
    }
    assert web.broker_connection_timeout == WEB_SOCKET_TIMEOUT
    assert web.task_publish_retry_policy["max_retries"] == 1
    assert workers.broker_transport_options == {
        "confirm_publish": True,
        "read_timeout": WORKER_SOCKET_TIMEOUT,
        "write_timeout": WORKER_SOCKET_TIMEOUT,
    }
    for each in (web, workers):  # kombu's py-amqp transport, late acks as on Redis
        assert each.broker_transport is None
        assert each.task_acks_late and each.task_reject_on_worker_lost
        assert each.result_backend == "redis://127.0.0.1:1/0"


def test_production_refuses_rabbitmq_without_a_result_backend(tmp_path):
    production = {
        "ENV": "production",
        "SECRET_KEY": "8f14e45fceea167a5a36dedd4bea2543c9a4b1f0e4a8b2d6c1f3e5a7b9d0c2e4",
        "BROKER_URL": AMQP,
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
    }
    with pytest.raises(ConfigError, match="needs RESULT_BACKEND beside an amqp://"):
        create_app({"INSTANCE_PATH": str(tmp_path), **production})


def test_development_keeps_rabbitmq_results_in_the_instance_folder_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="core_app.celery_app"):
        backend = conf(tmp_path, BROKER_URL=AMQP).result_backend
    assert backend == f"file://{tmp_path}/celery/results"
    assert "RabbitMQ keeps no results" in caplog.text
    assert "CORE_APP_RESULT_BACKEND" in caplog.text


def start_worker(tmp_path, role: Role, **config) -> None:
    """What Celery's celeryd_init does in a worker started on this app (worker_start)."""
    become_worker(celery_app(tmp_path, role, **config))


@pytest.mark.parametrize("role", [Role(), Role.worker(["notifications"])], ids=["web", "worker"])
def test_a_worker_warns_when_it_may_hold_a_message_past_the_consumer_timeout(
    tmp_path, caplog, role
):
    """Whatever app the worker starts on: celery -A run:celery worker uses the web's."""
    with caplog.at_level(logging.WARNING, logger="core_app.worker_start"):
        start_worker(tmp_path, role, BROKER_URL=AMQP, RESULT_BACKEND="redis://127.0.0.1:1/0")
        assert "consumer_timeout" not in caplog.text  # 4 x 300 + 180 + 10 s < 30 min
        start_worker(
            tmp_path, role, BROKER_URL=AMQP, RESULT_BACKEND="redis://x:1/0", TASK_TIME_LIMIT=600
        )
    assert f"default consumer_timeout ({CONSUMER_TIMEOUT} s)" in caplog.text
    assert "above 2590 s" in caplog.text  # 4 x 600 + 180 + 10


def test_a_worker_says_when_no_redis_counts_its_deliveries(tmp_path, caplog):
    role = Role.worker(["notifications"])
    with caplog.at_level(logging.WARNING, logger="core_app.worker_start"):
        start_worker(tmp_path, role, BROKER_URL=AMQP, RESULT_BACKEND="redis://127.0.0.1:1/0")
        assert "Deliveries are not counted" not in caplog.text
        database = "db+postgresql://u:secret@127.0.0.1:1/db"
        start_worker(tmp_path, role, BROKER_URL=AMQP, RESULT_BACKEND=database)
    assert "Deliveries are not counted" in caplog.text
    assert "results go to db+postgresql://." in caplog.text
    assert "secret" not in caplog.text


def test_plugin_queues_are_durable_and_messages_persistent(make_app, amqp_url, redis_url):
    app = make_app(BROKER_URL=amqp_url, RESULT_BACKEND=redis_url)
    with app.app_context():
        email = send_task("notifications.send_email", kwargs=EMAIL)
    with Connection(amqp_url) as connection:
        channel = connection.default_channel
        # Declaring it again as transient fails if it exists durable: RabbitMQ compares.
        assert channel.queue_declare("notifications", passive=True).message_count == 1
        message = channel.basic_get("notifications", no_ack=True)
    assert message.headers["id"] == email.id
    assert message.properties["delivery_mode"] == 2  # persistent
    with Connection(amqp_url) as connection, pytest.raises(Exception, match="durable"):
        connection.default_channel.queue_declare("notifications", durable=False)


def test_a_message_rabbitmq_refuses_is_a_503_not_a_202(
    make_app, amqp_url, redis_url, rabbitmq_server
):
    """Publisher confirms: a queue that rejects new messages (full, overflow
    reject-publish) nacks the publish, which the request reports, instead of a 202 for
    a message that was dropped."""
    app = make_app(BROKER_URL=amqp_url, RESULT_BACKEND=redis_url)
    client = app.test_client()
    assert client.post("/api/notifications/emails", json=EMAIL).status_code == 202
    vhost = amqp_url.rpartition("/")[2]
    policy = json.dumps({"max-length": 1, "overflow": "reject-publish"})
    rabbitmq_server.ctl("set_policy", "-p", vhost, "full", "^notifications$", policy)
    wait_for(lambda: _policy(rabbitmq_server, vhost) == "full", timeout=10)
    refused = client.post("/api/notifications/emails", json=EMAIL)
    assert refused.status_code == 503, refused.text
    assert refused.json["status"] == 503
    with app.app_context(), pytest.raises(BrokerUnavailable, match="refused the message"):
        send_task("notifications.send_email", kwargs=EMAIL)
    with Connection(amqp_url) as connection:
        assert connection.default_channel.queue_declare("notifications", passive=True)[1] == 1


def _policy(server, vhost: str) -> str:
    """The policy RabbitMQ applies to the notifications queue now."""
    rows = server.ctl("list_queues", "-q", "-p", vhost, "name", "policy").splitlines()
    return dict(row.split("\t") for row in rows if "\t" in row).get("notifications", "")


#: A plugin whose beat entry runs every half second, and whose task keeps a journal.
TICKER_INIT = """\
from core_app import hookimpl


@hookimpl
def core_app_beat_schedule():
    return {"tick": {"task": "ticker.tick", "schedule": 0.5}}
"""
TICKER_TASKS = """\
import os

from celery import shared_task


@shared_task(name="ticker.tick")
def tick():
    with open(os.environ["TICKER_JOURNAL"], "a") as out:
        out.write("tick\\n")
"""


def test_beat_and_a_plugin_worker_run_a_periodic_task(broker, tmp_path):
    site = write_plugin_dist(
        tmp_path / "site", "ticker", {"__init__.py": TICKER_INIT, "tasks.py": TICKER_TASKS}
    )
    journal = tmp_path / "journal"
    env = clean_env(**broker.env(), CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env["TICKER_JOURNAL"] = str(journal)
    beat_args = ("beat", "--schedule", str(tmp_path / "beat-schedule"), "--loglevel", "INFO")
    beat = Proc(run_py(*beat_args), env, tmp_path / "beat.log").start("beat: Starting")
    try:
        ticker = worker("ticker", env, tmp_path / "worker.log")
        try:
            wait_for(lambda: journal.exists() and len(journal.read_text().split()) >= 3, 30)
        finally:
            ticker.stop()
    finally:
        beat.stop()
    assert "Sending due task ticker.tick (ticker.tick)" in beat.output()


@pytest.mark.parametrize("broker", ["amqp"], indirect=True)  # Redis: test_workers, test_tasks
def test_a_worker_for_one_plugin_sends_another_plugins_task_by_name(broker, make_app, tmp_path):
    """The shop worker does not import notifications; the purchase receipt it would
    send goes by name to the notifications queue, where that plugin's worker runs it."""
    app = make_app(**broker.config())
    env = clean_env(**broker.env(), CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"))
    shop = worker("shop", env, tmp_path / "shop.log")
    try:
        shop_app = create_app(
            {"TESTING": True, "INSTANCE_PATH": str(tmp_path / "shop"), **broker.config()},
            role=Role.worker(["shop"]),
        )
        assert "notifications.send_email" not in shop_app.extensions["celery"].tasks
        with shop_app.app_context():
            email = send_task("notifications.send_email", kwargs=EMAIL)
        time.sleep(1)  # the shop worker consumes its own queue only
        assert broker.waiting("notifications") == 1
        notifications = worker("notifications", env, tmp_path / "notifications.log")
        try:
            result = app.extensions["celery"].AsyncResult(email.id)
            assert result.get(timeout=20)["to"] == EMAIL["to"]
        finally:
            notifications.stop()
    finally:
        shop.stop()
    assert "notifications.send_email" not in shop.output()
