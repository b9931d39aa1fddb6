"""What a process does when it becomes a Celery worker (or beat), however it was started.

``python run.py worker`` builds the app for a worker. ``celery -A run:celery worker``
(Celery's own command line, Flower's docs, a copied systemd unit) imports the web
process's app, whose broker waits are made for requests (0.3 s), and starts a worker on
it. Both send Celery's ``celeryd_init`` before the worker connects to the broker, so
what every worker needs is done there, once, for both; ``beat_init`` likewise for
``python run.py beat`` and ``celery -A run:celery beat``.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from celery.signals import beat_init, celeryd_init, worker_process_init

from . import deadletter
from .brokers import is_amqp
from .celery_app import CONSUMER_TIMEOUT, PluginCelery, visibility_timeout

log = logging.getLogger(__name__)


def connect() -> None:
    """Run :func:`become_worker` in any process that starts a worker, and give beat the
    same broker waits (idempotent)."""
    celeryd_init.connect(_on_worker_init, weak=False, dispatch_uid="core_app.worker_start")
    beat_init.connect(_on_beat_init, weak=False, dispatch_uid="core_app.beat_start")


def _on_worker_init(sender: object = None, instance: Any = None, **kwargs: Any) -> None:
    celery_app = getattr(instance, "app", None)
    if isinstance(celery_app, PluginCelery):
        become_worker(celery_app)


def _on_beat_init(sender: Any = None, **kwargs: Any) -> None:
    """Beat waits for the broker like a worker: a web's 0.3 s would drop periodic runs."""
    celery_app = getattr(sender, "app", None)
    if isinstance(celery_app, PluginCelery):
        celery_app.conf.update(celery_app.worker_settings)


def become_worker(celery_app: PluginCelery) -> None:
    """Give the worker about to start on ``celery_app`` a worker's settings and pool.

    - The broker waits of a worker (2 s, retries), where the app was built for a web
      process: a worker waits for the broker rather than fail a request.
    - On RabbitMQ, a warning when a healthy worker may hold a message longer than the
      broker's consumer_timeout, and one when no Redis counts deliveries (results in a
      database): ``MAX_DELIVERIES`` then bounds nothing.
    - Pool children that leave SIGTERM to the worker (:func:`leave_sigterm_to_the_parent`).
    """
    celery_app.conf.update(celery_app.worker_settings)
    if is_amqp(celery_app.conf.broker_url):
        _check_rabbitmq_bounds(celery_app)
    worker_process_init.connect(
        leave_sigterm_to_the_parent, weak=False, dispatch_uid="core_app.leave_sigterm"
    )


def _check_rabbitmq_bounds(celery_app: PluginCelery) -> None:
    """What bounds RabbitMQ leaves to settings: how long a message may be held (its
    consumer_timeout) and how often it is delivered (counted in Redis only)."""
    config = celery_app.flask_app.config
    held = visibility_timeout({**config, "VISIBILITY_TIMEOUT": None})
    if held > CONSUMER_TIMEOUT:
        log.warning(
            "A worker may hold a message unacknowledged for %s s (prefetch x TASK_TIME_LIMIT"
            " + MAX_COUNTDOWN + 10 s), longer than RabbitMQ's default consumer_timeout "
            "(%s s), which would close its channel and deliver the message again: raise "
            "consumer_timeout in rabbitmq.conf (milliseconds) above %s s.",
            held,
            CONSUMER_TIMEOUT,
            held,
        )
    if deadletter.redis_url(config) is None:
        log.warning(
            "Deliveries are not counted: MAX_DELIVERIES needs Redis as the broker or the "
            "result backend, and results go to %s://. A task that kills its worker every "
            "time is delivered again and again. Set RESULT_BACKEND=redis://... to bound it.",
            str(celery_app.conf.result_backend).partition(":")[0],
        )


def leave_sigterm_to_the_parent(**kwargs: Any) -> None:
    """In each pool child: ignore SIGTERM, which the worker (its parent) handles.

    systemd, ``timeout`` and ``kill -- -PGID`` send SIGTERM to the whole process group.
    An idle prefork child waits for its next task inside the pool's shared read lock
    (billiard's ``SimpleQueue.get_payload``); killed there, it leaves the lock taken, and
    the worker's exit (``Pool._help_stuff_finish``) waits for that lock forever. This
    happens with every transport that has no event loop (the embedded broker's
    filesystem transport), about one stop in three. Ignoring SIGTERM in the children
    makes a group SIGTERM what a SIGTERM to the worker alone is, a warm shutdown: the
    parent lets running tasks finish, then ends its children. A child never outlives
    the worker: Celery gives each one ``PR_SET_PDEATHSIG`` = SIGKILL on Linux.
    """
    if sys.platform.startswith("linux"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
