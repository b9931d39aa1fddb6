"""The Celery app of a Flask app, and how it delivers: one Celery app per Flask app.

Built the way Flask's "Background Tasks with Celery" does it: tasks run inside the Flask
app context, plugins write plain ``@shared_task`` and never import the host. Which
plugin owns which task, and on which queue it goes, is :mod:`core_app.tasks`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from amqp.exceptions import MessageNacked
from celery import Celery, Task
from celery.result import AsyncResult
from flask import Flask, current_app
from kombu.exceptions import OperationalError

from .brokers import REDIS_SCHEMES as REDIS_SCHEMES  # re-exported: benchmarks/bare_celery.py
from .brokers import is_amqp, is_redis
from .config import DEFAULTS
from .deadletter import count_delivery
from .embedded import embedded_config, embedded_result_backend
from .plugins import PluginHost
from .responses import broker_unavailable
from .roles import WEB
from .tasks import DEFAULT_QUEUE, PluginRouter, check_task_names, claim_tasks, import_task_modules

log = logging.getLogger(__name__)


def delivery_defaults(app: Flask) -> dict[str, Any]:
    """Celery settings for Redis or RabbitMQ that lose no task and never hang a request.

    - ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged when it
      has finished, so a worker killed mid-task leaves it to be delivered again (tasks
      must therefore be idempotent).
    - ``worker_deduplicate_successful_tasks``: a task delivered again (its worker died
      after it ran) whose SUCCESS is already in the result backend is not run again; the
      check reads the backend only for redelivered messages.
    - ``task_time_limit`` (``TASK_TIME_LIMIT``, 300 s): every task ends within a known
      time, so the visibility timeout can be derived rather than guessed.
    - Redis: ``visibility_timeout`` (``VISIBILITY_TIMEOUT``, else
      :func:`visibility_timeout`): how long Redis waits for that acknowledgement before
      delivering again. Tasks reserved by a worker that died are delivered again that
      long after it took them. RabbitMQ needs no such timeout (:func:`amqp_options`).
    - ``worker_prefetch_multiplier = 4`` (Celery's default): the example plugins' tasks
      are short, and reserving a few saves a Redis round trip per task. Reserved tasks
      are unacknowledged too, so a dead worker loses none of them, but a reserved task
      may wait for the ones before it, so the derived visibility timeout grows with the
      multiplier. For tasks that run minutes, set ``CELERY__worker_prefetch_multiplier=1``.
    - No task events and no STARTED state by default: they cost two more Redis writes
      per task (half the throughput of a short task). Flower switches events on in the
      workers it watches (``enable_events``); ``CELERY__worker_send_task_events=true``
      keeps them on.
    - publish retry of at most 2 short retries and 0.5 s connect/socket timeouts: a
      request whose broker is down gets a 503 within about a second, never a hang.
    - ``broker_connection_max_retries = None``: a worker started while the broker is
      down waits for it instead of exiting.
    - RabbitMQ: ``worker_cancel_long_running_tasks_on_connection_loss``: a worker that lost
      its connection can no longer acknowledge the tasks it runs, and RabbitMQ has already
      handed them out again, marked redelivered (which :mod:`core_app.inbox` honours), so
      it stops them rather than run them twice. Redis acknowledgements outlive a
      connection, so there they run on.
    """
    broker = (app.config.get("CELERY") or {}).get("broker_url") or app.config.get("BROKER_URL")
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_deduplicate_successful_tasks": True,
        "worker_prefetch_multiplier": PREFETCH_MULTIPLIER,
        "task_time_limit": _setting(app.config, "TASK_TIME_LIMIT"),
        "broker_transport_options": (
            amqp_options(WORKER_SOCKET_TIMEOUT) if is_amqp(broker) else redis_options(app.config)
        ),
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
        "worker_cancel_long_running_tasks_on_connection_loss": is_amqp(broker),
    }


PREFETCH_MULTIPLIER = 4
#: A worker waits this long for any one reply of the broker (web processes: 0.3 s).
WORKER_SOCKET_TIMEOUT = 2.0


def redis_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Transport options of Redis: the derived visibility timeout and its sweep."""
    timeout = visibility_timeout(config)
    return {
        "visibility_timeout": timeout,
        "unacked_restore_interval": sweep_interval(timeout),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 0.5,
        "socket_timeout": WORKER_SOCKET_TIMEOUT,
    }


def amqp_options(socket_timeout: float) -> dict[str, Any]:
    """Transport options of RabbitMQ (py-amqp): publisher confirms, bounded waits.

    ``confirm_publish``: each publish waits for the broker's ``basic.ack``, so a 202
    means RabbitMQ has the message (persistent, on a durable queue), and a ``basic.nack``
    raises instead of losing it. The wait for that ack, like any read, is bounded by
    ``read_timeout`` (the socket's ``SO_RCVTIMEO``) and writes by ``write_timeout``: a
    broker that accepts connections but never answers fails the publish, which kombu
    retries on a new connection. No visibility timeout: RabbitMQ returns a consumer's
    unacknowledged messages the moment its connection closes (a killed worker's too).
    """
    return {
        "confirm_publish": True,
        "read_timeout": socket_timeout,
        "write_timeout": socket_timeout,
    }


#: Seconds added to the derived visibility timeout: storing the result, acknowledging.
VISIBILITY_SLACK = 10


def _setting(config: Mapping[str, Any], key: str) -> Any:
    return config[key] if config.get(key) is not None else DEFAULTS[key]


def visibility_timeout(config: Mapping[str, Any]) -> int:
    """``VISIBILITY_TIMEOUT`` if set, else the longest a healthy worker keeps a message
    unacknowledged::

        prefetch multiplier x task time limit + MAX_COUNTDOWN + 10 s

    A reserved task waits for at most (multiplier - 1) tasks of its pool process before
    it runs for at most the time limit; a task sent with a countdown or an ETA (a retry)
    is held unacknowledged until it is due. A shorter timeout would hand such a message
    to a second worker while the first still has it. Settings from ``CELERY`` count
    (``worker_prefetch_multiplier``, ``worker_disable_prefetch``, ``task_time_limit``).
    """
    if config.get("VISIBILITY_TIMEOUT") is not None:
        return int(config["VISIBILITY_TIMEOUT"])
    celery = config.get("CELERY") or {}
    prefetch = 1 if celery.get("worker_disable_prefetch") else PREFETCH_MULTIPLIER
    prefetch = max(1, int(celery.get("worker_prefetch_multiplier", prefetch)))
    time_limit = celery.get("task_time_limit") or _setting(config, "TASK_TIME_LIMIT")
    countdown = _setting(config, "MAX_COUNTDOWN")
    return math.ceil(prefetch * float(time_limit) + float(countdown)) + VISIBILITY_SLACK


def sweep_interval(timeout: int) -> int:
    """How often workers look for messages of dead workers: a tenth of the timeout,
    1-60 s. A message is delivered again at most ``timeout`` + this after it was taken."""
    return max(1, min(60, timeout // 10))


#: A web process waits this long for any one reply of Redis (and to connect).
WEB_SOCKET_TIMEOUT = 0.3


def web_timeouts(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Shorter waits for a web process, whose requests must not hang on a broker that
    accepts connections but does not answer (frozen, overloaded, a half-open network).

    Publishing is one try and one retry, each waiting at most 0.3 s for Redis or
    RabbitMQ (connecting, the AMQP handshake, the publisher confirm, and a Redis result
    backend's subscription to the task's result channel included), so a request answers
    503 in about a second whatever the broker does. Workers keep the longer timeouts of
    :func:`delivery_defaults`: they wait for the broker rather than fail (a worker started
    on a web process's app by ``celery -A run:celery worker`` gets them back,
    :mod:`core_app.worker_start`).
    """
    if is_amqp(settings["broker_url"]):
        timeouts = amqp_options(WEB_SOCKET_TIMEOUT)
    else:
        timeouts = {
            "socket_connect_timeout": WEB_SOCKET_TIMEOUT,
            "socket_timeout": WEB_SOCKET_TIMEOUT,
        }
    return {
        "broker_transport_options": {**settings["broker_transport_options"], **timeouts},
        "broker_connection_timeout": WEB_SOCKET_TIMEOUT,
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.1,
            "interval_max": 0.1,
        },
        "redis_socket_connect_timeout": WEB_SOCKET_TIMEOUT,
        "redis_socket_timeout": WEB_SOCKET_TIMEOUT,
        "result_backend_transport_options": {"retry_policy": {"max_retries": 0}},
    }


class PluginCelery(Celery):  # type: ignore[misc]
    """Celery whose ``send_task`` reports an unreachable result backend, and a message
    RabbitMQ refused (a ``basic.nack`` under publisher confirms), as broker errors.

    Before it publishes, the Redis result backend subscribes to the task's result channel
    (``on_task_call``). With Redis down, that subscription fails, the result consumer's
    reconnect fails too, and Celery raises ``RuntimeError`` ("Retry limit exceeded while
    trying to reconnect to the Celery result store backend") from the connection error,
    which kombu does not translate: the request answered 500, not 503, and the shop's
    ``except BrokerUnavailable`` missed it. The consumer reconnects on the next send once
    Redis is back, so the error is as temporary as the broker's own.
    """

    #: ``MAX_COUNTDOWN``: a task sent to run later than this is logged (see below).
    max_countdown: float | None = None
    #: What a worker or beat started on this app sets before it connects
    #: (core_app.worker_start): the broker waits that an app built for a web process
    #: shortened.
    worker_settings: dict[str, Any]
    #: The Flask app this Celery app belongs to (its settings, read when a worker starts).
    flask_app: Flask

    def send_task(self, *args: Any, **kwargs: Any) -> AsyncResult:
        self._check_countdown(args[0] if args else kwargs.get("name"), kwargs)
        try:
            return super().send_task(*args, **kwargs)
        except OperationalError as exc:  # kombu's, with an empty text for a nack
            if isinstance(exc.__cause__ or exc.__context__, MessageNacked):
                raise OperationalError(
                    "RabbitMQ refused the message (basic.nack: a full queue, a policy)"
                ) from exc
            raise
        except RuntimeError as exc:
            cause = exc.__cause__
            if cause is None or not isinstance(
                cause, getattr(self.backend, "connection_errors", ())
            ):
                raise
            raise OperationalError(f"result backend unreachable: {cause}") from exc

    def _check_countdown(self, name: object, options: Mapping[str, Any]) -> None:
        """A task sent with a countdown or ETA waits unacknowledged in a worker; beyond
        ``MAX_COUNTDOWN`` Redis's visibility timeout may hand it to a second worker, and
        RabbitMQ's consumer_timeout may close the worker's channel (see below)."""
        due = options.get("countdown")
        eta = options.get("eta")
        if isinstance(eta, datetime):  # naive means UTC, as for Celery
            now = datetime.now(UTC)
            due = (eta - (now if eta.tzinfo else now.replace(tzinfo=None))).total_seconds()
        if self.max_countdown is None or due is None or due <= self.max_countdown:
            return
        if is_amqp(self.conf.broker_url):
            log.warning(
                "%s is sent to run in %.0f s, beyond MAX_COUNTDOWN (%s s): a worker holding "
                "it unacknowledged longer than RabbitMQ's consumer_timeout (%s s by default) "
                "loses its channel and the task is delivered again. Raise MAX_COUNTDOWN.",
                name,
                due,
                self.max_countdown,
                CONSUMER_TIMEOUT,
            )
        else:
            log.warning(
                "%s is sent to run in %.0f s, beyond MAX_COUNTDOWN (%s s): the visibility "
                "timeout (%s s) may deliver it twice. Raise MAX_COUNTDOWN.",
                name,
                due,
                self.max_countdown,
                self.conf.broker_transport_options.get("visibility_timeout"),
            )


def celery_init_app(app: Flask, host: PluginHost) -> Celery:
    """Make the Celery app of ``app``, with every active plugin's tasks on its queue."""

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                count_delivery(app, self)  # a message delivered too often is parked
                return self.run(*args, **kwargs)

    celery_app = PluginCelery(app.import_name, task_cls=FlaskTask)
    celery_app.flask_app = app
    celery_app.max_countdown = float(_setting(app.config, "MAX_COUNTDOWN"))
    settings = delivery_defaults(app)
    if app.config["BROKER_URL"]:
        settings["broker_url"] = app.config["BROKER_URL"]
        settings["result_backend"] = result_backend(app)
    else:
        settings.update(embedded_config(app.instance_path))
    broker = settings["broker_url"]
    celery_app.worker_settings = {}
    if host.role.kind == WEB and (is_redis(broker) or is_amqp(broker)):
        worker = {**settings, **app.config["CELERY"]}
        web = web_timeouts(settings)
        settings.update(web)
        celery_app.worker_settings = {key: worker[key] for key in web}
    settings.update(app.config["CELERY"])
    if is_redis(settings.get("broker_url")):
        from . import redis_transport

        settings.setdefault("broker_transport", redis_transport.NAME)
    router = PluginRouter(host)
    settings["task_routes"] = (router,)
    celery_app.config_from_object(settings)
    celery_app.set_default()
    celery_app.finalize(auto=True)
    from . import worker_start  # it names PluginCelery

    worker_start.connect()
    app.extensions["celery"] = celery_app
    if is_redis(celery_app.conf.result_backend):
        # Reading a result while Redis is down raises redis-py's own errors.
        from redis.exceptions import ConnectionError, TimeoutError

        app.register_error_handler(ConnectionError, broker_unavailable)
        app.register_error_handler(TimeoutError, broker_unavailable)
    app.extensions["core_app.router"] = router
    host.each(lambda record: import_task_modules(host, record), builtins=False)
    claim_tasks(celery_app, host, router)
    host.each(lambda record: check_task_names(router, record), builtins=False)
    return celery_app


def result_backend(app: Flask) -> str:
    """``RESULT_BACKEND``, else the broker when it can keep results (Redis).

    RabbitMQ cannot: Celery's ``rpc://`` sends a result to the process that queued the
    task only, so a status URL read by another web process would stay PENDING forever.
    Production refuses RabbitMQ without ``RESULT_BACKEND`` (core_app.config); development
    keeps results in the instance folder's files, which one machine's processes share.
    """
    broker = app.config["BROKER_URL"]
    if app.config["RESULT_BACKEND"]:
        return str(app.config["RESULT_BACKEND"])
    if not is_amqp(broker):
        return str(broker)
    log.warning(
        "RabbitMQ keeps no results: they go to files in %s, which only this machine "
        "sees. Set CORE_APP_RESULT_BACKEND=redis://... (or db+postgresql://...).",
        app.instance_path,
    )
    return embedded_result_backend(app.instance_path)


#: RabbitMQ's default ``consumer_timeout`` (seconds): a delivery unacknowledged longer
#: closes its consumer's channel, and the message is delivered again.
CONSUMER_TIMEOUT = 1800


def check_time_limits(celery_app: Celery) -> None:
    """A task allowed to run longer than ``task_time_limit`` outlives the derived
    visibility timeout: say so where it is imported (its workers). Called once the
    plugins' own task options are set (core_app.task_options)."""
    limit = celery_app.conf.task_time_limit
    for name, task in celery_app.tasks.items():
        own = getattr(task, "time_limit", None)
        if limit and own and own > limit:
            log.warning(
                "%s has time_limit=%s s, above TASK_TIME_LIMIT (%s s), from which the "
                "visibility timeout is derived: it may be delivered twice while it runs. "
                "Raise TASK_TIME_LIMIT (or VISIBILITY_TIMEOUT) in every process.",
                name,
                own,
                limit,
            )


def check_broker() -> None:
    """Readiness check: the broker answers within its connect timeout."""
    celery_app: Celery = current_app.extensions["celery"]
    with celery_app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0.1, timeout=1)
