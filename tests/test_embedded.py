"""The embedded default: ``python run.py`` with no broker runs tasks in a worker of its
own, on files in the instance folder that outlive every process."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from procs import Web, clean_env, descendants, running, wait_for, worker

DONE = ("SUCCESS", "FAILURE")


def embedded_env(instance: Path) -> dict[str, str]:
    """No CORE_APP_BROKER_URL: the embedded broker in ``instance``."""
    return clean_env(CORE_APP_INSTANCE_PATH=str(instance))


def assert_sent(instance: Path, body: dict, to: str, subject: str) -> None:
    assert body["state"] == "SUCCESS", body
    eml = instance / "outbox" / f"{body['task_id']}.eml"
    assert body["result"]["file"] == eml.name
    text = eml.read_text()
    assert f"To: {to}" in text and f"Subject: {subject}" in text


def test_python_run_py_runs_tasks_in_its_embedded_worker(tmp_path):
    instance = tmp_path / "instance"
    web = Web(embedded_env(instance), tmp_path / "web.log").start()
    try:
        queued = web.post_email(to="grace@example.com", subject="Embedded")
        assert queued["status_url"] == f"/api/notifications/emails/{queued['task_id']}"
        body = web.wait_for_state(queued["status_url"], DONE, timeout=40)
        assert_sent(instance, body, "grace@example.com", "Embedded")

        # The embedded worker and its pool process, all started by the server.
        family = descendants(web.pid)
        assert len(family) >= 2, family
        web.process.send_signal(signal.SIGTERM)
        assert web.process.wait(timeout=30) == 0, web.tail()
        wait_for(lambda: not any(running(pid) for pid in family), timeout=15)
    finally:
        web.stop()


def test_queued_tasks_wait_for_any_worker_across_restarts(tmp_path):
    instance = tmp_path / "instance"
    env = embedded_env(instance)
    web = Web(env, tmp_path / "web.log", "serve", "--no-embedded-worker").start()
    try:
        assert descendants(web.pid) == []
        first = web.post_email(subject="First")
        time.sleep(1)
        assert web.get(first["status_url"]).json()["state"] == "PENDING"

        # A worker for one plugin, started on its own, consumes the embedded queue.
        separate = worker("notifications", env, tmp_path / "worker.log")
        try:
            body = web.wait_for_state(first["status_url"], DONE)
        finally:
            # Killed, not stopped: a worker on the polling file transport takes ~6 s
            # to shut down warmly, and its one task is done and acknowledged.
            separate.kill_group()
        assert_sent(instance, body, "ada@example.com", "First")

        second = web.post_email(subject="Second")  # and now nothing consumes it
    finally:
        web.stop()
    assert list((instance / "celery" / "queue").iterdir()), "the message waits in a file"

    web = Web(env, tmp_path / "web2.log").start()  # the default again: an embedded worker
    try:
        body = web.wait_for_state(second["status_url"], DONE, timeout=40)
        assert_sent(instance, body, "ada@example.com", "Second")
    finally:
        web.kill_group()  # graceful shutdown is tested above
