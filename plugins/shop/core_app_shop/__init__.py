"""The shop plugin: hook implementations only; routes are in views, tasks in tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery.schedules import crontab
from flask import Blueprint, Flask
from sqlalchemy import MetaData

from core_app import hookimpl

from .constants import DAILY_SUMMARY_TASK


@hookimpl
def core_app_config_defaults() -> Mapping[str, Any]:
    # Receipts are queued in the purchase's transaction (the host's outbox), so none is
    # lost while the broker is down; false sends them after the commit (one write fewer).
    return {"RECEIPTS_THROUGH_OUTBOX": True}


@hookimpl
def core_app_models() -> MetaData:
    from .models import Base  # the migrations are in migrations/, found by the host

    return Base.metadata


@hookimpl
def core_app_blueprint(app: Flask) -> Blueprint:
    from .views import blueprint

    return blueprint


@hookimpl
def core_app_task_options() -> Mapping[str, Mapping[str, Any]]:
    # Beat runs the summary daily and nobody reads its result (the worker logs it):
    # storing it would cost a result-backend write per run for nothing.
    return {DAILY_SUMMARY_TASK: {"ignore_result": True}}


@hookimpl
def core_app_beat_schedule() -> Mapping[str, Mapping[str, Any]]:
    return {"daily-sales-summary": {"task": DAILY_SUMMARY_TASK, "schedule": crontab(0, 5)}}
