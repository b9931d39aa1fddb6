"""What a process is for, decided before its app is built.

A web server needs every enabled plugin's routes; a worker for ``shop`` needs shop's
tasks and the plugins shop depends on, nothing else; beat needs every plugin's schedule
but no task module. The command line knows which one it is before anything is imported,
so it says so here (:func:`assume`) and then loads the app module, whose
``create_app()`` builds just that. Without a command line of ours (gunicorn,
``flask --app run``, ``celery -A run:celery``) a process is a web process: everything
enabled is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

WEB, WORKER, BEAT, COMMAND = "web", "worker", "beat", "command"
#: ``python run.py db ...``: migrates on purpose, so the app never migrates on its own.
DB = "db"


@dataclass(frozen=True)
class Role:
    """The job of one process.

    :param kind: ``web``, ``worker``, ``beat`` or ``command`` (a plugin's CLI command).
    :param plugins: the plugins this process serves; None for every enabled plugin. The
        plugins they depend on are loaded too, but not served.
    :param lenient: judge plugins leniently whatever ``PLUGIN_ERRORS`` says (reports).
    """

    kind: str = WEB
    plugins: tuple[str, ...] | None = None
    lenient: bool = False

    @classmethod
    def worker(cls, plugins: Iterable[str] | None = None) -> Role:
        return cls(WORKER, None if plugins is None else tuple(plugins))

    @property
    def imports_tasks(self) -> bool:
        """Beat only sends tasks by name: it never imports a task module."""
        return self.kind != BEAT

    @property
    def mounts_routes(self) -> bool:
        return self.kind != BEAT

    def serves(self, plugin: str) -> bool:
        return self.plugins is None or plugin in self.plugins

    def describe(self) -> str:
        served = "every enabled plugin" if self.plugins is None else ", ".join(self.plugins)
        return f"{self.kind} for {served}"


_assumed: Role | None = None


def assume(role: Role) -> None:
    """Declare this process's role; the next ``create_app()`` builds for it."""
    global _assumed
    _assumed = role


def current() -> Role:
    """The role declared by :func:`assume`, or a web process's."""
    return _assumed or Role()
