"""A worker is a worker however it was started.

``python run.py worker PLUGIN`` builds the app for a worker; Celery's own
``celery -A run:celery worker`` imports the web process's app (a request's broker waits,
0.3 s) and starts a worker on it. Both get a worker's broker waits and pool children that
leave SIGTERM to the worker (core_app.worker_start); ``celery -A run:celery beat`` gets the
same broker waits.
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest
from celery import beat
from celery.signals import beat_init
from procs import WORKER_ARGS, Proc, children, clean_env, run_py, wait_for

from core_app.celery_app import WEB_SOCKET_TIMEOUT, WORKER_SOCKET_TIMEOUT

NODE = f"notifications@{socket.gethostname()}"
COMMANDS = {
    "run.py worker": run_py("worker", "notifications", *WORKER_ARGS),
    "celery worker": [
        *(sys.executable, "-m", "celery", "-A", "run:celery", "worker"),
        *("-Q", "notifications", "-n", "notifications@%h", *WORKER_ARGS),
    ],
}


def ignores_sigterm(pid: int) -> bool:
    """Whether ``pid`` ignores SIGTERM (the SigIgn mask of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    raise AssertionError(f"no SigIgn line for {pid}")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_worker_waits_for_the_broker_as_a_worker_and_its_children_leave_sigterm_to_it(
    command, redis_url, make_app, tmp_path
):
    env = clean_env(CORE_APP_BROKER_URL=redis_url, CORE_APP_INSTANCE_PATH=str(tmp_path))
    worker = Proc(COMMANDS[command], env, tmp_path / "worker.log").start(" ready.")
    try:
        web = make_app(BROKER_URL=redis_url).extensions["celery"]
        assert web.conf.broker_transport_options["socket_timeout"] == WEB_SOCKET_TIMEOUT
        replies = web.control.inspect([NODE], timeout=10).conf(with_defaults=False)
        assert replies and NODE in replies, worker.tail()
        conf = replies[NODE]
        assert conf["broker_transport_options"]["socket_timeout"] == WORKER_SOCKET_TIMEOUT
        assert conf["redis_socket_timeout"] == WORKER_SOCKET_TIMEOUT
        assert conf["task_publish_retry_policy"]["max_retries"] == 2

        pool = wait_for(lambda: children(worker.pid))
        assert pool and all(ignores_sigterm(pid) for pid in pool), pool
        assert not ignores_sigterm(worker.pid)  # the worker itself shuts down warmly on it
    finally:
        worker.stop()


def test_beat_started_on_the_web_app_waits_for_the_broker_as_a_worker(make_app, redis_url):
    """``celery -A run:celery beat`` imports the web app; beat_init gives it back the
    broker waits of a long-lived process before its scheduler connects."""
    celery_app = make_app(BROKER_URL=redis_url).extensions["celery"]
    assert celery_app.conf.broker_transport_options["socket_timeout"] == WEB_SOCKET_TIMEOUT
    beat_init.send(sender=beat.Service(app=celery_app))
    assert celery_app.conf.broker_transport_options["socket_timeout"] == WORKER_SOCKET_TIMEOUT
    assert celery_app.conf.task_publish_retry_policy["max_retries"] == 2
