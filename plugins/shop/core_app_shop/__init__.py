"""The shop plugin: hook implementations only; routes are in views, tasks in tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery.schedules import crontab
from flask import Blueprint, Flask

from core_app import hookimpl

from .constants import DAILY_SUMMARY_TASK


@hookimpl
def core_app_config_defaults() -> Mapping[str, Any]:
    # File name of the SQLite database, relative to the instance folder.
    return {"DATABASE": "shop.sqlite3"}


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


@hookimpl
def core_app_health_checks() -> Mapping[str, Any]:
    from .storage import check_database

    return {"database": check_database}
