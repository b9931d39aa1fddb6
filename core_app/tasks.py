"""Plugins' tasks: which plugin owns each task, and the queue it goes to.

A task belongs to the plugin whose task modules define it, and is routed to that
plugin's queue. Plugins reach each other's tasks by name with :func:`send_task`, which
knows every enabled plugin's queue without importing it: a task's name says which
plugin it belongs to (``<plugin>.`` or the plugin's package), and a name that does not
is refused where the task is defined, because no other process could route it. Options
a plugin sets on its tasks are :mod:`core_app.task_options`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from celery import Celery, Task
from celery.result import AsyncResult
from flask import Flask, current_app
from kombu.exceptions import OperationalError

from .errors import (
    BrokerUnavailable,
    PluginConflictError,
    PluginDeclarationError,
    PluginImportError,
    TaskUnavailable,
)
from .plugins import PluginHost
from .records import PluginRecord

DEFAULT_QUEUE = "celery"


def queue_name(app: Flask, plugin: str) -> str:
    return str(app.config["PLUGIN_QUEUES"].get(plugin, plugin))


def _default_task_modules(record: PluginRecord) -> list[str]:
    if not isinstance(record.obj, ModuleType):
        return []
    package = (
        record.obj.__name__.rpartition(".")[0]
        if not hasattr(record.obj, "__path__")
        else record.obj.__name__
    )
    if not package:  # a top-level module has no package: a top-level `tasks` is not its own
        return []
    return [f"{package}.tasks"] if _has_tasks_module(package) else []


def _has_tasks_module(package: str) -> bool:
    """Whether ``package.tasks`` exists: one stat per folder for a package on disk, which
    is most of the cost of start-up with hundreds of plugins if left to the import system."""
    module = sys.modules.get(package)
    spec = getattr(module, "__spec__", None)
    folders = getattr(module, "__path__", None)
    if spec is None or not spec.has_location or not folders:
        return importlib.util.find_spec(f"{package}.tasks") is not None
    return any(
        (Path(folder) / "tasks.py").is_file() or (Path(folder) / "tasks" / "__init__.py").is_file()
        for folder in folders
    )


def import_task_modules(host: PluginHost, record: PluginRecord) -> None:
    """Import the task modules of a plugin this process serves; their tasks register
    themselves (shared_task). Beat, and a worker for the plugins that depend on this one,
    send its tasks by name and import none of them."""
    record.queue = queue_name(host.app, record.name)
    if not (host.role.imports_tasks and host.role.serves(record.name)):
        return
    declared = host.call(record, "core_app_task_modules")
    if declared is None:
        modules = _default_task_modules(record)
    elif (
        isinstance(declared, Sequence)
        and not isinstance(declared, str)
        and all(isinstance(m, str) for m in declared)
    ):
        modules = list(declared)
    else:
        raise PluginDeclarationError(
            record.name,
            f"core_app_task_modules() returned {declared!r}.",
            "return a list of module names, e.g. ['shop.tasks'].",
        )
    for name in modules:
        _import_task_module(record, name)
    record.task_modules = modules


def claim_tasks(celery_app: Celery, host: PluginHost, router: PluginRouter) -> None:
    """Give each registered task to the plugin whose task module defines it, in one pass
    over the registry (a pass per plugin would make start-up grow with N squared)."""
    plugin_of = {m: r.name for r in host.active(builtins=False) for m in r.task_modules}
    claims: dict[str, list[str]] = {}
    for name, task in celery_app.tasks.items():
        module = getattr(task, "__module__", "") or ""
        while module and module not in plugin_of:  # a submodule of a task module counts
            module = module.rpartition(".")[0]
        if module:
            claims.setdefault(plugin_of[module], []).append(name)
    for record in host.active(builtins=False):
        record.tasks = sorted(claims.get(record.name, []))
        router.claim(record, record.tasks)


def check_task_names(router: PluginRouter, record: PluginRecord) -> None:
    """Refuse a plugin whose task modules hold a task another plugin owns (one name
    defined twice, where Celery keeps the first, or a task imported from another
    plugin), or a task whose name other processes cannot route to this plugin."""
    for name in record.task_modules:
        module = sys.modules[name]
        for value in vars(module).values():
            if isinstance(value, Task) and value.name not in record.tasks:
                other = router.owner(value.name)
                if other is not None and other != record.name:
                    raise PluginConflictError(
                        record.name,
                        f"{module.__name__} defines task {value.name!r}, which plugin "
                        f"{other!r} defines too.",
                        f"name tasks '<plugin>.<task>' ({record.name}.…), and call other "
                        "plugins' tasks by name with core_app.send_task, not by import.",
                        other=f"plugin {other!r}",
                    )
    for task_name in record.tasks:
        _check_routable(router, record, task_name)


def _check_routable(router: PluginRouter, record: PluginRecord, task_name: str) -> None:
    """A process that does not import this plugin's task modules (another plugin's
    worker, beat) knows the task by its name only: the name must lead to this plugin."""
    named = router.named_owner(task_name)
    if named == record.name:
        return
    fix = (
        f"name it '{record.name}.<task>' (@shared_task(name=...)), or leave Celery's "
        f"default name (module path) to a task defined in the plugin's own package."
    )
    if named is None:
        raise PluginDeclarationError(
            record.name,
            f"its task {task_name!r} has a name that leads to no plugin: a process that "
            f"does not import {record.name}'s tasks (another plugin's worker, beat) cannot "
            "tell its queue, so send_task raises TaskUnavailable there and beat would "
            "queue it where no worker reads.",
            fix,
        )
    raise PluginConflictError(
        record.name,
        f"its task {task_name!r} is named like plugin {named!r}'s tasks: processes that "
        f"do not import {record.name}'s tasks would route it to {named!r}'s queue.",
        fix,
        other=f"plugin {named!r}",
    )


def _import_task_module(record: PluginRecord, name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception as exc:  # the task module's failure is the plugin's
        raise PluginImportError(
            record.name,
            f"its task module {name!r} raised {type(exc).__name__}: {exc}",
            f"fix {name}, or the list returned by core_app_task_modules().",
        ) from exc


def _defined_in(task: Task, modules: Sequence[str]) -> bool:
    module = getattr(task, "__module__", "") or ""
    return any(module == m or module.startswith(f"{m}.") for m in modules)


def unregister_inactive_tasks(app: Flask, host: PluginHost) -> None:
    """Only active plugins' tasks are this app's; called once the app is complete.

    A failed plugin's tasks must not run, even those its other modules registered. A
    disabled plugin's ``@shared_task`` module is never imported by this app, but if it was
    imported in this process before (another app, as in a test session), Celery adds its
    shared tasks to every app, and ``send_task`` would then queue them instead of raising
    ``TaskUnavailable``.
    """
    celery_app: Celery = app.extensions["celery"]
    router: PluginRouter = app.extensions["core_app.router"]
    packages = [r.source.target.split(":")[0].split(".")[0] for r in host.plugins() if not r.active]
    for name, task in list(celery_app.tasks.items()):
        owner = router.owners.get(name)
        if owner is not None and host.records[owner].active:
            continue
        if _defined_in(task, packages):
            celery_app.tasks.unregister(name)


class PluginRouter:
    """Celery router: a task goes to the queue of the plugin that owns it.

    Owners are known from the imported task modules; a task of an enabled plugin not
    loaded in this process (a worker for another plugin, beat) is found by its name
    (:meth:`named_owner`), so no plugin has to be imported to send it a task.
    """

    def __init__(self, host: PluginHost) -> None:
        self.host = host
        self.owners: dict[str, str] = {}
        self._packages: dict[str, str] | None = None

    def claim(self, record: PluginRecord, names: Sequence[str]) -> None:
        for name in names:
            self.owners[name] = record.name

    def owner(self, task_name: str) -> str | None:
        claimed = self.owners.get(task_name)
        if claimed is not None:
            return claimed if self.host.records[claimed].active else None
        named = self.named_owner(task_name)
        record = self.host.records.get(named) if named else None
        if record is not None and record.enabled and not record.failed:
            return named
        return None

    def named_owner(self, task_name: str) -> str | None:
        """The installed plugin a task name points at, whatever its status: the
        ``<plugin>.`` prefix, else the longest package of a plugin's entry point that
        the name starts with (Celery names a ``@shared_task`` without ``name=`` after
        its module, ``core_app_shop.tasks.summary``). Nothing is imported."""
        prefix, dot, _ = task_name.partition(".")
        record = self.host.records.get(prefix) if dot else None
        if record is not None:
            return None if record.builtin else prefix
        if self._packages is None:
            self._packages = _packages_of(self.host.records.values())
        module = task_name.rpartition(".")[0]
        while module and module not in self._packages:
            module = module.rpartition(".")[0]
        return self._packages.get(module) if module else None

    def __call__(
        self, name: str, args: Any, kwargs: Any, options: Mapping[str, Any], **kw: Any
    ) -> dict[str, str] | None:
        owner = self.owner(name)
        return {"queue": queue_name(self.host.app, owner)} if owner else None


def send_task(
    name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> AsyncResult:
    """Queue a task of any enabled plugin by name, on that plugin's queue.

    :raises TaskUnavailable: no enabled plugin owns ``name`` (not installed, disabled or
        failed): the caller decides whether that matters.
    :raises BrokerUnavailable: the broker did not take the message within the publish
        retry budget; the host answers such a request with 503.
    """
    celery_app: Celery = current_app.extensions["celery"]
    router: PluginRouter = current_app.extensions["core_app.router"]
    if router.owner(name) is None and name not in celery_app.tasks:
        raise TaskUnavailable(
            f"No enabled plugin provides the task {name!r}; install and enable the plugin "
            "that defines it."
        )
    task = celery_app.tasks.get(name)
    if task is not None:  # as Task.apply_async does: no result subscription if ignored
        options.setdefault("ignore_result", task.ignore_result)
    try:
        return celery_app.send_task(name, args=args, kwargs=kwargs, **options)
    except OperationalError as exc:
        raise BrokerUnavailable(f"Could not queue {name!r}: {exc}") from exc


def _packages_of(records: Iterable[PluginRecord]) -> dict[str, str]:
    """Package (and module) -> plugin, for every package that holds exactly one
    plugin's entry point; a package two plugins share (a namespace) names neither."""
    found: dict[str, set[str]] = {}
    for record in records:
        if record.builtin:
            continue
        obj = record.source.obj
        if obj is None:
            module = record.source.target.partition(":")[0].strip()
        else:
            module = obj.__name__ if isinstance(obj, ModuleType) else ""
        parts = module.split(".")
        if not module or not all(part.isidentifier() for part in parts):
            continue
        for end in range(1, len(parts) + 1):
            found.setdefault(".".join(parts[:end]), set()).add(record.name)
    return {package: names.pop() for package, names in found.items() if len(names) == 1}
