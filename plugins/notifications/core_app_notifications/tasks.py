"""Celery tasks of the notifications plugin (queue 'notifications')."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from flask import current_app

from .constants import SEND_EMAIL_TASK
from .mail import TemporaryFailure, build_message, deliver


@shared_task(bind=True, name=SEND_EMAIL_TASK)
def send_email(self: Task, to: str, subject: str, body: str) -> dict[str, Any]:
    """Send one email; temporary SMTP failures are retried with a doubling delay."""
    message = build_message(to, subject, body)
    try:
        return {"to": to, **deliver(message, self.request.id or "message")}
    except TemporaryFailure as exc:
        delay = float(current_app.config["NOTIFICATIONS_RETRY_DELAY"])
        raise self.retry(
            exc=exc,
            countdown=delay * 2**self.request.retries,
            max_retries=int(current_app.config["NOTIFICATIONS_MAX_RETRIES"]),
        ) from exc
