"""The Celery app of a Flask app, and how it delivers: one Celery app per Flask app.

Built the way Flask's "Background Tasks with Celery" does it: tasks run inside the Flask
app context, plugins write plain ``@shared_task`` and never import the host. Which
plugin owns which task, and on which queue it goes, is :mod:`core_app.tasks`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.result import AsyncResult
from flask import Flask, current_app
from kombu.exceptions import OperationalError

from .embedded import embedded_config
from .plugins import PluginHost
from .responses import broker_unavailable
from .tasks import DEFAULT_QUEUE, PluginRouter, check_task_names, claim_tasks, import_task_modules

#: Brokers served by core_app.redis_transport (kombu's, fixed to survive a restart).
REDIS_SCHEMES = ("redis://", "rediss://")


def delivery_defaults(app: Flask) -> dict[str, Any]:
    """Celery settings for Redis that lose no task and never hang a request.

    - ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged when it
      has finished, so a worker killed mid-task leaves it to be delivered again (tasks
      must therefore be idempotent).
    - ``worker_deduplicate_successful_tasks``: a task delivered again (its worker died
      after it ran) whose SUCCESS is already in the result backend is not run again; the
      check reads the backend only for redelivered messages.
    - ``visibility_timeout`` (``VISIBILITY_TIMEOUT``, 1 h): how long Redis waits for that
      acknowledgement before delivering again; longer than the longest task.
    - ``worker_prefetch_multiplier = 4`` (Celery's default): the example plugins' tasks
      are short, and reserving a few saves a Redis round trip per task. Reserved tasks
      are unacknowledged too, so a dead worker loses none of them. For tasks that run
      minutes, set ``CELERY__worker_prefetch_multiplier=1`` so one slow task does not
      hold others back.
    - No task events and no STARTED state by default: they cost two more Redis writes
      per task (half the throughput of a short task). Flower switches events on in the
      workers it watches (``enable_events``); ``CELERY__worker_send_task_events=true``
      keeps them on.
    - publish retry of at most 2 short retries and 0.5 s connect/socket timeouts: a
      request whose broker is down gets a 503 within about a second, never a hang.
    - ``broker_connection_max_retries = None``: a worker started while the broker is
      down waits for it instead of exiting.
    """
    timeouts = {"socket_connect_timeout": 0.5, "socket_timeout": 2.0}
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_deduplicate_successful_tasks": True,
        "worker_prefetch_multiplier": 4,
        "broker_transport_options": {
            "visibility_timeout": app.config["VISIBILITY_TIMEOUT"],
            # Sweep for tasks of dead workers every tenth of the timeout (1-60 s).
            "unacked_restore_interval": max(1, min(60, app.config["VISIBILITY_TIMEOUT"] // 10)),
            "unacked_restore_throttle": 1,
            **timeouts,
        },
        "broker_connection_timeout": 0.5,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        "redis_socket_connect_timeout": 0.5,
        "redis_socket_timeout": 2.0,
        "result_backend_transport_options": {
            "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        },
        "result_expires": 7 * 24 * 3600,
        "task_default_queue": DEFAULT_QUEUE,
    }


class PluginCelery(Celery):  # type: ignore[misc]
    """Celery whose ``send_task`` reports an unreachable result backend as a broker error.

    Before it publishes, the Redis result backend subscribes to the task's result channel
    (``on_task_call``). With Redis down, that subscription fails, the result consumer's
    reconnect fails too, and Celery raises ``RuntimeError`` ("Retry limit exceeded while
    trying to reconnect to the Celery result store backend") from the connection error,
    which kombu does not translate: the request answered 500, not 503, and the shop's
    ``except BrokerUnavailable`` missed it. The consumer reconnects on the next send once
    Redis is back, so the error is as temporary as the broker's own.
    """

    def send_task(self, *args: Any, **kwargs: Any) -> AsyncResult:
        try:
            return super().send_task(*args, **kwargs)
        except RuntimeError as exc:
            cause = exc.__cause__
            if cause is None or not isinstance(
                cause, getattr(self.backend, "connection_errors", ())
            ):
                raise
            raise OperationalError(f"result backend unreachable: {cause}") from exc


def celery_init_app(app: Flask, host: PluginHost) -> Celery:
    """Make the Celery app of ``app``, with every active plugin's tasks on its queue."""

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = PluginCelery(app.import_name, task_cls=FlaskTask)
    settings = delivery_defaults(app)
    if app.config["BROKER_URL"]:
        settings["broker_url"] = app.config["BROKER_URL"]
        settings["result_backend"] = app.config["RESULT_BACKEND"] or app.config["BROKER_URL"]
    else:
        settings.update(embedded_config(app.instance_path))
    settings.update(app.config["CELERY"])
    if str(settings.get("broker_url")).startswith(REDIS_SCHEMES):
        from . import redis_transport

        settings.setdefault("broker_transport", redis_transport.NAME)
    router = PluginRouter(host)
    settings["task_routes"] = (router,)
    celery_app.config_from_object(settings)
    celery_app.set_default()
    celery_app.finalize(auto=True)
    app.extensions["celery"] = celery_app
    if str(celery_app.conf.result_backend).startswith(("redis://", "rediss://")):
        # Reading a result while Redis is down raises redis-py's own errors.
        from redis.exceptions import ConnectionError, TimeoutError

        app.register_error_handler(ConnectionError, broker_unavailable)
        app.register_error_handler(TimeoutError, broker_unavailable)
    app.extensions["core_app.router"] = router
    host.each(lambda record: import_task_modules(host, record), builtins=False)
    claim_tasks(celery_app, host, router)
    host.each(lambda record: check_task_names(router, record), builtins=False)
    return celery_app


def check_broker() -> None:
    """Readiness check: the broker answers within its connect timeout."""
    celery_app: Celery = current_app.extensions["celery"]
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=1)
