"""Tasks queued as part of a database transaction: the transactional outbox.

``enqueue(session, "notifications.send_email", kwargs=...)`` writes the message into
``core_app_outbox`` (a table of the host's own branch) in the caller's transaction, so
it exists exactly when the caller's rows do. After the commit the process that wrote it
publishes it and deletes its row. When that fails (the broker is down, the process
died), the row stays, and the **workers of the message's queue** publish it: every
worker relays the rows bound for the queues it consumes, a thread in its main process
(:class:`Relay`). So a worker for X still imports only X (a row holds the task's name,
arguments and options, nothing to import), and a message waits exactly for the
processes that would run it. A message may be published twice (its row outlived the
publish); its id (the Celery task id) stays the same, and receivers skip ids they have
done with :func:`core_app.inbox.once`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from flask import Flask, current_app, has_app_context
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.orm import Session

from .db import Database, current_database, plugin_metadata
from .errors import BrokerUnavailable, TaskUnavailable
from .tasks import DEFAULT_QUEUE, send_task

log = logging.getLogger("core_app.outbox")

#: The host's own tables (branch ``core_app``): the outbox, and the inbox of core_app.inbox.
metadata = plugin_metadata()


def _now() -> datetime:
    return datetime.now(UTC)


outbox = Table(
    "core_app_outbox",
    metadata,
    Column("id", String(128), primary_key=True),  # the Celery task id
    Column("task", String(255), nullable=False),
    Column("queue", String(255), nullable=False),
    Column("args", JSON, nullable=False),
    Column("kwargs", JSON, nullable=False),
    Column("options", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, default=_now),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Index("ix_core_app_outbox_queue_created_at", "queue", "created_at"),
)
inbox = Table(
    "core_app_inbox",
    metadata,
    Column("consumer", String(255), primary_key=True),  # the task's name
    Column("message_id", String(128), primary_key=True),  # the task id
    Column("state", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=_now),
)

_PENDING = "core_app.outbox"
#: Seconds the web skips publishing after the broker failed (the relay will do it).
BROKER_BACKOFF = 5.0


@dataclass(frozen=True)
class Message:
    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]


def enqueue(
    session: Session,
    name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> str:
    """Queue task ``name`` as part of ``session``'s transaction; returns its task id.

    The message is published after ``session.commit()`` (nothing if it rolls back),
    or later by a worker of its queue if the broker cannot take it then.

    :raises TaskUnavailable: no enabled plugin provides ``name``.
    :raises TypeError: arguments or options that JSON cannot hold.
    """
    celery_app: Celery = current_app.extensions["celery"]
    router = current_app.extensions["core_app.router"]
    if router.owner(name) is None and name not in celery_app.tasks:
        raise TaskUnavailable(
            f"No enabled plugin provides the task {name!r}; install and enable the plugin "
            "that defines it."
        )
    task = celery_app.tasks.get(name)
    if task is not None:
        options.setdefault("ignore_result", task.ignore_result)
    message = Message(str(uuid.uuid4()), name, list(args), dict(kwargs or {}), dict(options))
    json.dumps([message.args, message.kwargs, message.options])  # TypeError now, not later
    route = router(name, message.args, message.kwargs, message.options) or {}
    session.execute(
        insert(outbox).values(
            id=message.id,
            task=name,
            queue=route.get("queue", DEFAULT_QUEUE),
            args=message.args,
            kwargs=message.kwargs,
            options=message.options,
        )
    )
    session.info.setdefault(_PENDING, []).append(message)
    return message.id


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    """The commit is done: publishing must not undo it or raise from ``commit()``."""
    messages = session.info.pop(_PENDING, None)
    if not messages:
        return
    if not has_app_context():
        log.warning("outbox: %d message(s) committed outside an app context", len(messages))
        return  # the relay publishes them
    try:
        publish(messages)
    except Exception:
        log.exception("outbox: publishing after the commit failed; the relay will")


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def publish(messages: Sequence[Message]) -> list[str]:
    """Publish committed messages now and have their rows deleted; never raises (a row
    left behind is the relay's). Skipped for a few seconds after the broker failed."""
    database = current_database()
    if time.monotonic() < database.broker_down_until:
        return []
    published = []
    for message in messages:
        try:
            send_task(
                message.task, message.args, message.kwargs, task_id=message.id, **message.options
            )
        except BrokerUnavailable as exc:
            database.broker_down_until = time.monotonic() + BROKER_BACKOFF
            log.warning("outbox: %d message(s) left to the relay: %s", len(messages), exc)
            break
        published.append(message.id)
    if published:
        _cleaner(database).forget(published)
    return published


class Cleaner(threading.Thread):
    """Deletes the rows of published messages in batches, off the request's path.

    A row deleted late (or never: the process died) is older than the relay's grace
    by then and is published again; its receiver skips the id it has done.
    """

    #: Seconds a batch gathers before its one DELETE.
    DELAY = 0.2

    def __init__(self, database: Database) -> None:
        super().__init__(name="core_app-outbox-cleaner", daemon=True)
        self.database, self.pid = database, os.getpid()
        self.ids: list[str] = []
        self.lock = threading.Lock()
        self.pending = threading.Event()

    def forget(self, ids: Sequence[str]) -> None:
        with self.lock:
            self.ids.extend(ids)
        self.pending.set()

    def run(self) -> None:
        while self.pending.wait():
            time.sleep(self.DELAY)
            with self.lock:
                ids, self.ids = self.ids, []
                self.pending.clear()
            try:
                with self.database.engine.begin() as connection:
                    connection.execute(delete(outbox).where(outbox.c.id.in_(ids)))
            except Exception as exc:  # the relay publishes them again; ids dedupe
                log.warning("outbox: rows of %d published messages not deleted: %s", len(ids), exc)


_cleaners: weakref.WeakKeyDictionary[Database, Cleaner] = weakref.WeakKeyDictionary()
_cleaners_lock = threading.Lock()


def _cleaner(database: Database) -> Cleaner:
    """The database's cleaner in this process (a forked child starts its own)."""
    with _cleaners_lock:
        cleaner = _cleaners.get(database)
        if cleaner is None or cleaner.pid != os.getpid():
            cleaner = _cleaners[database] = Cleaner(database)
            cleaner.start()
        return cleaner


def relay_once(app: Flask, queues: Sequence[str], grace: float, batch: int = 100) -> int:
    """Publish up to ``batch`` rows bound for ``queues`` that are older than ``grace``
    seconds (younger ones are still their writer's to publish); returns how many."""
    database = current_database(app)
    cutoff = _now() - timedelta(seconds=grace)
    done: list[str] = []
    with app.app_context(), database.engine.begin() as connection:
        rows = connection.execute(
            select(outbox)
            .where(outbox.c.queue.in_(list(queues)), outbox.c.created_at <= cutoff)
            .order_by(outbox.c.created_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            try:
                send_task(row.task, row.args, row.kwargs, task_id=row.id, **row.options)
            except (BrokerUnavailable, TaskUnavailable) as exc:
                connection.execute(
                    update(outbox)
                    .where(outbox.c.id == row.id)
                    .values(attempts=outbox.c.attempts + 1, last_error=str(exc)[:1000])
                )
                break
            done.append(row.id)
        if done:
            connection.execute(delete(outbox).where(outbox.c.id.in_(done)))
    if done:
        log.info("outbox: relayed %d message(s) for %s", len(done), ", ".join(queues))
    return len(done)


class Relay(threading.Thread):
    """Relays a worker's queues' outbox rows every ``interval`` seconds."""

    def __init__(self, app: Flask, queues: Sequence[str]) -> None:
        super().__init__(name="core_app-outbox-relay", daemon=True)
        self.app, self.queues = app, list(queues)
        self.interval = float(app.config["OUTBOX_RELAY_INTERVAL"])
        self.grace = float(app.config["OUTBOX_RELAY_GRACE"])
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                while relay_once(self.app, self.queues, self.grace) and not self.stopping.is_set():
                    pass
            except Exception as exc:  # the database may be down too: try again later
                log.warning("outbox relay for %s: %s", ", ".join(self.queues), exc)


_relays: list[Relay] = []


def init_outbox(app: Flask) -> None:
    """Let this app's workers find it when they are ready (see :func:`_start_relay`)."""
    app.extensions["celery"].flask_app = app


def _start_relay(sender: Any = None, **kwargs: Any) -> None:
    """In a worker's main process, once its pool runs: relay the queues it consumes."""
    celery_app = getattr(sender, "app", None)
    app = getattr(celery_app, "flask_app", None)
    if app is None or not app.config["OUTBOX_RELAY_INTERVAL"]:
        return
    queues = sorted(celery_app.amqp.queues.consume_from)  # type: ignore[union-attr]
    relay = Relay(app, queues)
    relay.start()
    _relays.append(relay)


def _stop_relays(**kwargs: Any) -> None:
    while _relays:
        relay = _relays.pop()
        relay.stopping.set()
        relay.join(timeout=5)


worker_ready.connect(_start_relay, weak=False)
worker_shutdown.connect(_stop_relays, weak=False)
