"""Celery tasks of the notifications plugin (queue 'notifications')."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from flask import current_app

from core_app.inbox import once

from .constants import SEND_EMAIL_TASK
from .mail import TemporaryFailure, build_message, deliver


@shared_task(bind=True, name=SEND_EMAIL_TASK)
@once  # one email per task id, however often it is delivered (core_app.inbox)
def send_email(self: Task, to: str, subject: str, body: str) -> dict[str, Any]:
    """Send one email; temporary SMTP failures are retried with a doubling delay.

    Delivered again after its worker died, it does not send once its success is recorded
    (the host's ``worker_deduplicate_successful_tasks`` checks the result first); a worker
    killed after the server took the message but before the result was stored sends it
    twice, with the same Message-ID (its task id).
    """
    message = build_message(to, subject, body, key=self.request.id)
    try:
        return {"to": to, **deliver(message, self.request.id or "message")}
    except TemporaryFailure as exc:
        delay = float(current_app.config["NOTIFICATIONS_RETRY_DELAY"])
        raise self.retry(
            exc=exc,
            countdown=delay * 2**self.request.retries,
            max_retries=int(current_app.config["NOTIFICATIONS_MAX_RETRIES"]),
        ) from exc
