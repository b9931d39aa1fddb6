"""Celery options a plugin sets on its own tasks (``core_app_task_options``).

Each plugin declares options for its tasks by name, or for all of them with ``"*"``,
as Celery's ``task_annotations`` take them. The host checks every name and value
before it sets anything, refuses a task the plugin does not own, and sets the options
the way Celery sets a decorator's: as attributes of the task's class in this app, in
every process that imports the task (web and the plugin's workers), before a worker's
pool starts. The operator's ``CELERY["task_annotations"]`` win over a plugin's options.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery, Task
from celery.app.annotations import resolve_all as resolve_annotations
from celery.app.autoretry import add_autoretry_behaviour

from .errors import PluginConflictError, PluginDeclarationError, PluginError
from .plugins import PluginHost
from .records import PluginRecord
from .tasks import PluginRouter


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_rate(value: object) -> bool:
    return _is_seconds(value) or (isinstance(value, str) and bool(_RATE.fullmatch(value)))


def _is_exceptions(value: object) -> bool:
    return isinstance(value, tuple | list) and all(
        isinstance(e, type) and issubclass(e, BaseException) for e in value
    )


def _is_backoff(value: object) -> bool:
    return isinstance(value, bool) or _is_seconds(value)


def _is_kwargs(value: object) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)


_RATE = re.compile(r"\d+(\.\d+)?(/[smh])?")

#: Options a plugin may set on its tasks: how each is checked, and what it must be.
TASK_OPTIONS: dict[str, tuple[Callable[[object], bool], str]] = {
    "ignore_result": (_is_bool, "True or False"),
    "store_errors_even_if_ignored": (_is_bool, "True or False"),
    "acks_late": (_is_bool, "True or False"),
    "reject_on_worker_lost": (_is_bool, "True or False"),
    "track_started": (_is_bool, "True or False"),
    "time_limit": (_is_seconds, "seconds, a number above 0"),
    "soft_time_limit": (_is_seconds, "seconds, a number above 0"),
    "rate_limit": (_is_rate, "'10/s', '100/m', '5/h', or tasks per second"),
    "max_retries": (_is_count, "an int of at least 0"),
    "default_retry_delay": (lambda v: _is_count(v) or _is_seconds(v), "seconds, at least 0"),
    "autoretry_for": (_is_exceptions, "a tuple of exception classes"),
    "retry_backoff": (_is_backoff, "True, False, or a factor in seconds"),
    "retry_backoff_max": (_is_seconds, "seconds, a number above 0"),
    "retry_jitter": (_is_bool, "True or False"),
    "retry_kwargs": (_is_kwargs, "a dict of Task.retry() arguments"),
}
#: Celery reads these when it wraps the task for autoretry.
_RETRY_OPTIONS = {
    "autoretry_for",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
    "retry_kwargs",
}
#: Options that would move a task off its plugin's queue.
_ROUTING_OPTIONS = {"queue", "exchange", "exchange_type", "routing_key", "priority"}


def apply_task_options(host: PluginHost, record: PluginRecord) -> None:
    """Set the options ``core_app_task_options`` declares on the plugin's own tasks, in
    a process that imports them; everything is checked before anything is set."""
    if not (host.role.imports_tasks and host.role.serves(record.name)):
        return
    declared = host.call(record, "core_app_task_options")
    if declared is None:
        return
    celery_app: Celery = host.app.extensions["celery"]
    router: PluginRouter = host.app.extensions["core_app.router"]
    if not _is_kwargs(declared) or not all(_is_kwargs(v) for v in declared.values()):
        raise _bad_options(record, f"core_app_task_options() returned {declared!r}.")
    for name, options in declared.items():
        if name != "*" and name not in record.tasks:
            _refuse_foreign_task(router, record, name)
        for option, value in options.items():
            _check_option(record, name, option, value)
    every = declared.get("*", {})
    planned = {}
    for name in record.tasks:
        task = celery_app.tasks[name]
        options = {**every, **declared.get(name, {})}
        for annotation in resolve_annotations(celery_app.annotations, task):
            for key in annotation:  # the operator's task_annotations win
                options.pop(key, None)
        soft = options.get("soft_time_limit", task.soft_time_limit)
        hard = options.get("time_limit", task.time_limit)
        if soft and hard and soft >= hard:
            raise _bad_options(
                record, f"task {name!r} gets soft_time_limit {soft} >= time_limit {hard}."
            )
        planned[name] = options
    for name, options in planned.items():
        _set_options(celery_app.tasks[name], options)


def _check_option(record: PluginRecord, name: str, option: object, value: object) -> None:
    if option in _ROUTING_OPTIONS:
        raise _bad_options(
            record,
            f"option {option!r} for {name!r}: a plugin's tasks go to its own queue.",
            f"drop {option!r}; operators rename the queue with "
            f"PLUGIN_QUEUES={{'{record.name}': ...}}.",
        )
    if option not in TASK_OPTIONS:
        raise _bad_options(record, f"unknown option {option!r} for {name!r}.")
    check, expected = TASK_OPTIONS[str(option)]
    if not check(value):
        raise _bad_options(
            record, f"option {option!r} for {name!r} is {value!r}; it must be {expected}."
        )


def _refuse_foreign_task(router: PluginRouter, record: PluginRecord, name: str) -> None:
    other = router.owner(name)
    if other is not None and other != record.name:
        raise PluginConflictError(
            record.name,
            f"core_app_task_options() sets options on task {name!r}, which plugin {other!r} owns.",
            "set options on your own tasks only; the other plugin sets its own.",
            other=f"plugin {other!r}",
        )
    raise _bad_options(
        record,
        f"core_app_task_options() names task {name!r}, which its task modules do not "
        f"define (its tasks: {', '.join(record.tasks) or 'none'}).",
    )


def _bad_options(record: PluginRecord, cause: str, fix: str | None = None) -> PluginError:
    return PluginDeclarationError(
        record.name,
        cause,
        fix
        or "return {task name or '*': {option: value}} with options among "
        f"{', '.join(TASK_OPTIONS)} (see core_app.hookspecs.core_app_task_options).",
    )


def _set_options(task: Task, options: Mapping[str, Any]) -> None:
    """Set options as Celery sets a decorator's: class attributes of the app's task."""
    if _RETRY_OPTIONS & options.keys() and "_orig_run" in vars(task):
        del task.run, task._orig_run  # the decorator's autoretry wrapper: rebuilt below
    for option, value in options.items():
        setattr(type(task), option, tuple(value) if option == "autoretry_for" else value)
    task._exec_options = None  # Celery's cache of publish options (time limits)
    if _RETRY_OPTIONS & options.keys():
        add_autoretry_behaviour(task)
