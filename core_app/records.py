"""What the host knows about each plugin: one record per plugin, of any status."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import current_app, has_app_context
from werkzeug.routing import Rule

from .discovery import PluginSource
from .errors import PluginError

LOADED, DISABLED, FAILED = "loaded", "disabled", "failed"

#: Methods Werkzeug and Flask answer for every rule on their own: not counted.
AUTOMATIC_METHODS = frozenset({"HEAD", "OPTIONS"})


@dataclass
class PluginRecord:
    """What the host knows about one plugin: where it came from, and what it declared."""

    source: PluginSource
    builtin: bool = False
    #: Allowed by PLUGINS / DISABLED_PLUGINS (it may still be left to another process).
    enabled: bool = True
    status: str = LOADED
    reason: str | None = None
    error: PluginError | None = None
    obj: object | None = None
    import_seconds: float = 0.0
    dependencies: dict[str, str] = field(default_factory=dict)
    config_keys: list[str] = field(default_factory=list)
    url_prefix: str | None = None
    blueprint: str | None = None
    routes: list[str] = field(default_factory=list)
    #: What its blueprint registers for the whole app (request hooks, template filters,
    #: commands), e.g. "before_app_request: core_app_x.views.audit": shown, not refused.
    app_hooks: list[str] = field(default_factory=list)
    task_modules: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    queue: str | None = None
    beat_schedule: dict[str, Any] = field(default_factory=dict)
    health_checks: dict[str, Callable[[], object]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def distribution(self) -> str | None:
        return self.source.distribution

    @property
    def version(self) -> str | None:
        return self.source.version

    @property
    def active(self) -> bool:
        return self.status == LOADED

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def endpoints(self, rules: Iterable[Rule]) -> list[str]:
        """Each method of each of this plugin's rules among ``rules``, as ``"GET /path"``
        (HEAD and OPTIONS, which every rule answers, left out)."""
        mine = set(self.routes)
        found = []
        for rule in rules:
            if rule.rule in mine:
                methods = sorted((rule.methods or {"ANY"}) - AUTOMATIC_METHODS) or ["ANY"]
                found += [f"{method} {rule.rule}" for method in methods]
        return sorted(found, key=lambda e: (e.partition(" ")[2], e))

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (``run.py plugins --json``, ``/plugins``, the
        doctor).

        ``routes`` counts endpoints x methods (``GET /a`` and ``POST /a`` are two; HEAD
        and OPTIONS are not counted), listed in ``endpoints``: read from the URL map of
        the app whose context is active, else the number of distinct rules.
        """
        if has_app_context():
            endpoints = self.endpoints(current_app.url_map.iter_rules())
        else:
            endpoints = [f"ANY {rule}" for rule in self.routes]
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "url_prefix": self.url_prefix,
            "routes": len(endpoints),
            "endpoints": endpoints,
            "app_hooks": self.app_hooks,
            "task_modules": self.task_modules,
            "tasks": self.tasks,
            "queue": self.queue,
            "beat": beat_entries(self.beat_schedule),
            "status": self.status,
            "reason": self.reason,
            "error": self.error.message if self.error else None,
        }


def beat_entries(schedule: Mapping[str, Mapping[str, Any]]) -> list[dict[str, str]]:
    """Beat entries as JSON-ready rows: name, task and a readable schedule."""
    return [
        {"name": name, "task": str(entry["task"]), "schedule": describe_schedule(entry["schedule"])}
        for name, entry in sorted(schedule.items())
    ]


def describe_schedule(schedule: object) -> str:
    """``every 30 s``, ``crontab 0 5 * * *`` (minute hour day-of-month month
    day-of-week), or the schedule's own text."""
    if isinstance(schedule, int | float) and not isinstance(schedule, bool):
        return f"every {schedule:g} s"
    every = getattr(schedule, "run_every", schedule)
    if isinstance(every, timedelta) and not hasattr(schedule, "_orig_minute"):
        return f"every {every.total_seconds():g} s"
    parts = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    fields = [getattr(schedule, f"_orig_{part}", None) for part in parts]
    if all(field is not None for field in fields):
        return "crontab " + " ".join(str(field) for field in fields)
    return str(schedule)
