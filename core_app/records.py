"""What the host knows about each plugin: one record per plugin, of any status."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .discovery import PluginSource
from .errors import PluginError

LOADED, DISABLED, FAILED = "loaded", "disabled", "failed"


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

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (``run.py plugins --json``, ``/ready``)."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "url_prefix": self.url_prefix,
            "routes": len(self.routes),
            "app_hooks": self.app_hooks,
            "task_modules": self.task_modules,
            "tasks": self.tasks,
            "queue": self.queue,
            "status": self.status,
            "reason": self.reason,
            "error": self.error.message if self.error else None,
        }
