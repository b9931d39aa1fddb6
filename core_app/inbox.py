"""Run a task once per message id, however often its message arrives.

The outbox publishes a message again when it cannot tell that the first publish
worked, and a broker delivers a message again when a worker dies; both keep the task
id. A task decorated with :func:`once` records each id it handles in
``core_app_inbox`` (the host's branch, in the receiving worker's database) and skips an
id it has finished, or that another worker is running right now::

    @shared_task(bind=True, name="notifications.send_email")
    @once
    def send_email(self, to, subject, body): ...

A retry of the same message (``self.retry``, the same id, one more retry) takes the
id over; so does a delivery the broker marks *redelivered* (the broker hands a message out
again only once the consumer that held it is gone: RabbitMQ when its channel closes, at once;
Redis after the visibility timeout), and any delivery after the lease (``TASK_TIME_LIMIT``),
when the worker that claimed it must have died. A second *publish* of a running id (the
outbox's) is skipped. A task that fails for good gives the id back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Ignore, Retry
from flask import current_app, has_app_context
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from .db import current_database
from .deadletter import redelivered
from .outbox import inbox

RUNNING, DONE = "running", "done"
#: Seconds added to the task time limit before a running claim counts as abandoned.
LEASE_SLACK = 30

F = TypeVar("F", bound=Callable[..., Any])


def once(function: F) -> F:
    """Decorate a bound task's function (``bind=True``) to run once per task id."""

    @functools.wraps(function)
    def run(task: Task, *args: Any, **kwargs: Any) -> Any:
        message_id = task.request.id
        if not message_id or task.request.is_eager or not has_app_context():  # not delivered
            return function(task, *args, **kwargs)
        key = (task.name, message_id)
        if not claim(key, int(task.request.retries or 0), redelivered=redelivered(task)):
            raise Ignore()  # done already, or running elsewhere: its first result stands
        try:
            result = function(task, *args, **kwargs)
        except Retry:
            raise  # the retried message (same id, one more retry) takes the claim over
        except BaseException:
            release(key)
            raise
        finish(key)
        return result

    return run  # type: ignore[return-value]


def claim(key: tuple[str, str], attempt: int, *, redelivered: bool = False) -> bool:
    """Whether this delivery may run: the id is new, a retry of ours, or abandoned.

    ``redelivered`` (the broker's flag) says the consumer that held this message is gone,
    so its running claim is abandoned whatever the lease says.
    """
    consumer, message_id = key
    now = datetime.now(UTC)
    limit = current_app.config.get("TASK_TIME_LIMIT") or 300
    lease = timedelta(seconds=float(limit) + LEASE_SLACK)
    where = (inbox.c.consumer == consumer) & (inbox.c.message_id == message_id)
    for _ in range(2):  # a concurrent first claim makes the insert fail once
        try:
            with current_database().engine.begin() as connection:
                row = connection.execute(select(inbox).where(where).with_for_update()).first()
                if row is None:
                    connection.execute(
                        insert(inbox).values(
                            consumer=consumer,
                            message_id=message_id,
                            state=RUNNING,
                            attempt=attempt,
                            updated_at=now,
                        )
                    )
                    return True
                updated = row.updated_at
                if updated.tzinfo is None:  # SQLite keeps no zone: stored as UTC
                    updated = updated.replace(tzinfo=UTC)
                abandoned = redelivered or now - updated > lease
                if row.state == RUNNING and (attempt > row.attempt or abandoned):
                    connection.execute(
                        update(inbox).where(where).values(attempt=attempt, updated_at=now)
                    )
                    return True
                return False
        except IntegrityError:
            continue
    return False


def finish(key: tuple[str, str]) -> None:
    consumer, message_id = key
    where = (inbox.c.consumer == consumer) & (inbox.c.message_id == message_id)
    with current_database().engine.begin() as connection:
        connection.execute(
            update(inbox).where(where).values(state=DONE, updated_at=datetime.now(UTC))
        )


def release(key: tuple[str, str]) -> None:
    consumer, message_id = key
    where = (inbox.c.consumer == consumer) & (inbox.c.message_id == message_id)
    with current_database().engine.begin() as connection:
        connection.execute(delete(inbox).where(where))
