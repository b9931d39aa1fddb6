"""Bounded redelivery: a message delivered more than ``MAX_DELIVERIES`` times is parked.

Late acknowledgement delivers a task again when its worker dies; a task that kills its
worker every time (a crash in a C extension, memory exhausted) would be delivered
forever. So every task's redeliveries are counted, and the delivery after the last
allowed one does not run: the task is parked in a Redis list per plugin,
``deadletter:<plugin>``, its result becomes a FAILURE that says where it is, and its
message is dropped. ``python run.py deadletters list`` shows what is parked,
``python run.py deadletters requeue PLUGIN --id ID`` (or ``--all``) queues it again with
its count reset.

The count costs nothing on a first delivery: only a message that Redis (or kombu, after
a lost connection) handed out again, which carries the ``redelivered`` flag, increments
``core_app:deliveries:<task id>`` (a hash by retry number, since a Celery retry is a new
message with the same id). A delivery is one run; a message put back before its first
run counts that run as its second delivery. The counter lives on the broker's Redis (or
the result backend's, with another broker); with neither on Redis, nothing is counted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import Reject
from flask import Flask

from .brokers import is_redis

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

DELIVERIES = "core_app:deliveries:{}"
PARKED = "deadletter:{}"
#: How long a task's delivery count is kept after its last redelivery.
COUNT_TTL = 7 * 24 * 3600

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def redis_url(config: Mapping[str, Any]) -> str | None:
    """The Redis that holds counts and parked messages: the broker's, else the result
    backend's; None when neither is Redis."""
    celery = config.get("CELERY") or {}
    broker = celery.get("broker_url") or config.get("BROKER_URL")
    backend = celery.get("result_backend") or config.get("RESULT_BACKEND") or broker
    for url in (broker, backend):
        if is_redis(url):
            return url
    return None


def client(config: Mapping[str, Any]) -> redis.Redis | None:
    """One client per Redis per process (redis-py's pool reconnects after a fork)."""
    url = redis_url(config)
    if url is None:
        return None
    import redis

    with _clients_lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(
                url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True
            )
        return _clients[url]


def redelivered(task: Task) -> bool:
    """Whether the broker marks this delivery as a message it handed out before (its
    consumer is gone: Redis after the visibility timeout, RabbitMQ at once)."""
    return bool((task.request.delivery_info or {}).get("redelivered"))


def count_delivery(app: Flask, task: Task) -> None:
    """Called before a task runs: count it if its message was delivered again, and park
    it instead of running it once it has had ``MAX_DELIVERIES`` deliveries.

    :raises Reject: the task is parked; Celery records it as failed and drops its message.
    """
    request = task.request
    if not redelivered(task) or not request.id:
        return
    redis_client = client(app.config)
    if redis_client is None:
        return
    import redis

    key = DELIVERIES.format(request.id)
    try:
        with redis_client.pipeline(transaction=False) as pipe:
            pipe.hincrby(key, str(request.retries or 0), 1)
            pipe.expire(key, COUNT_TTL)
            redeliveries, _ = pipe.execute()
    except redis.RedisError as exc:
        log.warning("Could not count the deliveries of %s[%s]: %s", task.name, request.id, exc)
        return
    deliveries = int(redeliveries) + 1
    limit = int(app.config["MAX_DELIVERIES"])
    if deliveries <= limit:
        return
    router = app.extensions["core_app.router"]
    plugin = router.owner(task.name) or (request.delivery_info or {}).get("routing_key") or ""
    entry = {
        "id": request.id,
        "task": task.name,
        "plugin": plugin,
        "args": list(request.args or ()),
        "kwargs": dict(request.kwargs or {}),
        "retries": request.retries or 0,
        "root_id": request.root_id,
        "parent_id": request.parent_id,
        "deliveries": deliveries,
        "parked_at": time.time(),
    }
    redis_client.rpush(PARKED.format(plugin), json.dumps(entry, default=repr))
    log.error(
        "%s[%s] was delivered %d times (MAX_DELIVERIES=%d): parked in %s, not run.",
        task.name,
        request.id,
        deliveries,
        limit,
        PARKED.format(plugin),
    )
    raise Reject(
        f"delivered {deliveries} times (MAX_DELIVERIES={limit}), parked in "
        f"{PARKED.format(plugin)}: `python run.py deadletters requeue {plugin} "
        f"--id {request.id}` queues it again",
        requeue=False,
    )


def parked(redis_client: redis.Redis, plugin: str) -> list[tuple[str, dict[str, Any]]]:
    """The parked entries of ``plugin``, oldest first, each with its raw list item."""
    raws: list[str] = redis_client.lrange(PARKED.format(plugin), 0, -1)  # type: ignore[assignment]
    return [(raw, json.loads(raw)) for raw in raws]


def requeue(
    app: Flask, redis_client: redis.Redis, plugin: str, ids: Iterable[str] | None
) -> list[str]:
    """Queue parked tasks of ``plugin`` again (those in ``ids``, or all with None), with
    their delivery count reset; returns the ids queued. Each entry leaves the list only
    once its task is queued."""
    from .tasks import send_task

    wanted = None if ids is None else set(ids)
    queued = []
    with app.app_context():
        for raw, entry in parked(redis_client, plugin):
            if wanted is not None and entry["id"] not in wanted:
                continue
            redis_client.delete(DELIVERIES.format(entry["id"]))
            send_task(
                entry["task"],
                args=entry["args"],
                kwargs=entry["kwargs"],
                task_id=entry["id"],
                retries=entry["retries"],
                root_id=entry.get("root_id"),
                parent_id=entry.get("parent_id"),
            )
            redis_client.lrem(PARKED.format(plugin), 1, raw)
            queued.append(entry["id"])
    return queued


#: What ``deadletters list`` shows of each entry (:func:`summary`).
COLUMNS = ("plugin", "id", "task", "deliveries", "parked_at")


def summary(entries: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """What ``deadletters list`` shows of each entry."""
    return [
        {
            "plugin": entry["plugin"],
            "id": entry["id"],
            "task": entry["task"],
            "deliveries": entry["deliveries"],
            "parked_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["parked_at"])),
        }
        for _, entry in entries
    ]
