"""The notifications plugin: hook implementations only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask

from core_app import PluginDeclarationError, hookimpl

from .constants import SEND_EMAIL_TASK


@hookimpl
def core_app_config_defaults() -> Mapping[str, Any]:
    return {
        # smtp://host:port, smtp://host:587?starttls=true or smtps://host:465, each with
        # an optional user:password@; None writes to the outbox.
        "SMTP_URL": None,
        "SMTP_TIMEOUT": 10,
        # PEM file of the CAs that sign the SMTP server's certificate (default: the
        # system's). Certificates are always verified.
        "SMTP_CA_FILE": None,
        # A password over plain smtp:// is refused unless this is true.
        "SMTP_ALLOW_PLAINTEXT_LOGIN": False,
        # Where mail may go: addresses and @domains. Required in production, unless
        # ALLOW_ANY_RECIPIENT opens it to every address on purpose.
        "ALLOWED_RECIPIENTS": None,
        "ALLOW_ANY_RECIPIENT": False,
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


@hookimpl
def core_app_ready(app: Flask) -> None:
    """Refuse to start with a recipient policy or SMTP settings that are unsafe."""
    from .mail import UnsafeSettings, smtp_settings
    from .validation import check_settings

    problem = check_settings(app.config)
    if problem is None and app.config["NOTIFICATIONS_SMTP_URL"]:
        try:
            smtp_settings(app.config)
        except UnsafeSettings as exc:
            problem = str(exc)
    if problem:
        raise PluginDeclarationError(
            "notifications",
            f"{problem}.",
            "set CORE_APP_NOTIFICATIONS_ALLOWED_RECIPIENTS=@example.org,ops@example.com (the "
            "domains and addresses mail may go to) or CORE_APP_NOTIFICATIONS_ALLOW_ANY_RECIPIENT"
            "=true, and an SMTP URL as the README's configuration reference shows.",
        )
