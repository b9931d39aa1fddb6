"""The notifications plugin: hook implementations only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask

from core_app import hookimpl

from .constants import SEND_EMAIL_TASK


@hookimpl
def core_app_config_defaults() -> Mapping[str, Any]:
    return {
        # smtp://host:port (or smtp://user:password@host:port); None writes to the outbox.
        "SMTP_URL": None,
        "SMTP_TIMEOUT": 10,
        "SENDER": "core-app@localhost",
        # Folder for .eml files when no SMTP_URL is set, relative to the instance folder.
        "OUTBOX": "outbox",
        # Temporary SMTP failures are retried this many times, this many seconds apart
        # (doubling each time).
        "MAX_RETRIES": 5,
        "RETRY_DELAY": 2.0,
    }


@hookimpl
def core_app_blueprint(app: Flask) -> Blueprint:
    from .views import blueprint

    return blueprint


@hookimpl
def core_app_task_options() -> Mapping[str, Mapping[str, Any]]:
    # GET /api/notifications/emails/<task_id> reads the result: keep it stored even
    # where an operator turns results off app-wide (CELERY__task_ignore_result=true).
    return {SEND_EMAIL_TASK: {"ignore_result": False}}
