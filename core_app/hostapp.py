"""The host's Flask app: every URL rule that appears on it is attributed and checked.

A rule reaches the app through its URL map, and the map asks the app first: a rule that
appears while a plugin's hook runs, or while its blueprint is registered, is that
plugin's (:meth:`CoreApp.acting_for`) and must lie inside its prefix and clash with no
other owner; any other rule is the app owner's (``run.py``) and must stay out of every
plugin's prefix. What a plugin registers app-wide (request hooks, template filters) is
recorded so operators can see it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.routing import Map, Rule, RuleFactory

from .builtins import BUILTIN_NAME
from .errors import PluginConflictError, PluginError
from .plugins import PluginHost
from .records import PluginRecord
from .routes import APP, HOST, Owners, Route

log = logging.getLogger("core_app.mounting")

#: What was mounted at the last successful start: plugin name -> prefix.
MOUNTED_FILE = "mounted.json"
#: Flask's app-wide registries, by the decorator that fills them (for the report).
_HOOK_NAMES = {
    "before_request_funcs": "before_app_request",
    "after_request_funcs": "after_app_request",
    "teardown_request_funcs": "teardown_app_request",
    "template_context_processors": "app_context_processor",
    "url_value_preprocessors": "app_url_value_preprocessor",
    "url_default_functions": "app_url_defaults",
    "teardown_appcontext_funcs": "teardown_appcontext",
    "shell_context_processors": "shell_context_processor",
    "url_build_error_handlers": "url_build_error_handler",
}
_JINJA = {"template_filter": "filters", "template_test": "tests", "template_global": "globals"}


class _WatchedMap(Map):
    """The app's URL map: every rule added, whichever way, goes past the app first."""

    app: CoreApp | None = None

    def add(self, rulefactory: RuleFactory) -> None:
        for rule in rulefactory.get_rules(self):
            if self.app is None or self.app._admit(rule):
                super().add(rule)


@dataclass
class _Scope:
    """A plugin at work (a hook, or its blueprint's registration), and the rules it added."""

    record: PluginRecord
    #: Each rule held back, and whether its endpoint had a view function before.
    held: list[tuple[Rule, bool]] = field(default_factory=list)


class CoreApp(Flask):
    """A Flask app that knows who added each of its URL rules.

    A rule added while a plugin's hook runs is that plugin's: it is held back and
    checked when the hook returns (or when the plugin is mounted). A rule added outside
    any plugin's hooks is the app owner's (``@app.route`` in ``run.py``): it is allowed
    until the first request, as Flask allows it, unless it reaches into a plugin's place.
    """

    url_map_class = _WatchedMap
    #: True once create_app has mounted the plugins (informational).
    sealed = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owners = Owners()
        self._scope: _Scope | None = None
        self._pending: dict[str, list[tuple[Rule, bool]]] = {}
        if isinstance(self.url_map, _WatchedMap):
            self.url_map.app = self

    @contextmanager
    def acting_for(self, record: PluginRecord) -> Iterator[None]:
        """Run a hook of ``record``: every route that appears meanwhile is that plugin's."""
        outer, scope = self._scope, _Scope(record)
        self._scope = scope
        handlers = self._app_error_handlers()
        registered = app_wide_counts(self)
        try:
            yield
        except BaseException:
            self.discard(scope.held)
            raise
        finally:
            self._scope = outer
            added = self._keep_app_error_handlers(handlers)
        if added:
            self.discard(scope.held)
            raise PluginConflictError(
                record.name,
                f"it registers app-wide error handlers for {added} on the app, which "
                "would replace the host's JSON errors.",
                "use @blueprint.errorhandler (scoped to the plugin's routes).",
                other=HOST,
            )
        self._settle(scope)
        for hook in app_wide_added(self, registered):
            if hook not in record.app_hooks:
                record.app_hooks.append(hook)

    def _app_error_handlers(self) -> dict[Any, dict[Any, Any]]:
        return {code: dict(by_class) for code, by_class in self.error_handler_spec[None].items()}

    def _keep_app_error_handlers(self, before: dict[Any, dict[Any, Any]]) -> list[str]:
        """Undo what a plugin changed in the app-wide error handlers; say what it was."""
        after = self._app_error_handlers()
        if after == before:
            return []
        spec = self.error_handler_spec[None]
        spec.clear()
        spec.update(before)
        return sorted(
            str(code) if code is not None else exc.__name__
            for code, by_class in after.items()
            for exc, handler in by_class.items()
            if before.get(code, {}).get(exc) is not handler
        )

    def _admit(self, rule: Rule) -> bool:
        """Whether ``rule`` goes into the map now (False: held back for its plugin)."""
        if self._scope is not None:
            self._scope.held.append((rule, rule.endpoint in self.view_functions))
            return False
        if self._got_first_request:
            raise RuntimeError(
                f"Cannot add the route {rule.rule!r}: the app has handled a request. Add "
                "routes before the app serves (right after create_app())."
            )
        route = Route.of(rule)
        try:
            self.owners.check_app_route(route)
        except PluginError as error:
            record = self._records().get(error.plugin)
            if record is not None:
                error.with_origin(record.distribution, record.version)
            raise
        self.owners.claim(APP, [route])
        builtin = self._records().get(BUILTIN_NAME)
        if builtin is not None:
            builtin.routes.append(route.rule)
        return True

    def _settle(self, scope: _Scope) -> None:
        """Check and add the rules a plugin added, or keep them until it is mounted."""
        if not scope.held:
            return
        name = scope.record.name
        if name not in self.owners.mounted:
            self._pending.setdefault(name, []).extend(scope.held)
            return
        routes = [Route.of(rule) for rule, _ in scope.held]
        try:
            self.owners.check(name, routes, self.owners.mounted[name])
        except PluginError:
            self.discard(scope.held)
            raise
        self.commit(name, scope.held)
        scope.record.routes = sorted({*scope.record.routes, *(r.rule for r in routes)})

    def take_pending(self, record: PluginRecord) -> list[tuple[Rule, bool]]:
        """The rules ``record``'s hooks added before it was mounted."""
        return self._pending.pop(record.name, [])

    def commit(self, owner: str, held: list[tuple[Rule, bool]]) -> None:
        self.owners.claim(owner, [Route.of(rule) for rule, _ in held])
        for rule, _ in held:
            Map.add(self.url_map, rule)

    def discard(self, held: list[tuple[Rule, bool]]) -> None:
        """Forget held rules, and the view functions that came with them."""
        for rule, had_view in held:
            if not had_view and isinstance(rule.endpoint, str):
                self.view_functions.pop(rule.endpoint, None)

    def _records(self) -> dict[str, PluginRecord]:
        host = self.extensions.get("core_app")
        return host.records if isinstance(host, PluginHost) else {}

    def remember_mounted(self) -> None:
        """After a successful start, remember which plugin serves which prefix
        (``instance/mounted.json``): at the next start, a plugin installed since then
        cannot take their place."""
        if not self.owners.complete:
            return
        records = self._records()
        served = {
            name: prefix
            for name, prefix in sorted(self.owners.mounted.items())
            if prefix and name in records and records[name].active
        }
        if served == self.owners.previous:
            return
        path = Path(self.instance_path) / MOUNTED_FILE
        partial = path.with_name(f".{MOUNTED_FILE}.{os.getpid()}.tmp")
        try:
            partial.write_text(json.dumps(served, indent=2) + "\n")
            os.replace(partial, path)
        except OSError as exc:
            log.warning("could not write %s: %s", path, exc)


def read_mounted(instance_path: str) -> dict[str, str]:
    """What served at the previous start: plugin name -> prefix (empty if unknown)."""
    try:
        data = json.loads((Path(instance_path) / MOUNTED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _app_wide(app: Flask) -> dict[str, Any]:
    """The app's app-wide registries, by the decorator that fills them (None for the
    template registries before the Jinja environment is made)."""
    found: dict[str, Any] = {}
    for attr, kind in _HOOK_NAMES.items():
        value = getattr(app, attr, ())
        found[kind] = value.get(None, ()) if isinstance(value, dict) else value
    env = vars(app).get("jinja_env")
    for kind, attr in _JINJA.items():
        found[kind] = None if env is None else getattr(env, attr)
    found["cli command"] = app.cli.commands
    return found


def app_wide_counts(app: Flask) -> dict[str, int | None]:
    return {kind: None if v is None else len(v) for kind, v in _app_wide(app).items()}


def app_wide_added(app: Flask, before: dict[str, int | None]) -> list[str]:
    """What was registered app-wide since ``before`` (every registry only grows)."""
    added: list[str] = []
    fresh = None
    for kind, items in _app_wide(app).items():
        if items is None or len(items) == before[kind]:
            continue
        start = before[kind]
        if start is None:  # the Jinja environment was made meanwhile: skip its defaults
            fresh = fresh or app.create_jinja_environment()
            start = len(getattr(fresh, _JINJA[kind]))
        for item in list(items)[start:]:
            added.append(f"{kind}: {item if isinstance(item, str) else _qualname(item)}")
    return added


def copy_registry(value: Any) -> Any:
    """A copy two levels deep (Flask's registries are dicts of lists or of dicts)."""
    copied = copy.copy(value)
    if isinstance(copied, dict):
        for key, inner in copied.items():
            copied[key] = copy.copy(inner)
    return copied


def _qualname(function: Any) -> str:
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{name}" if module else name
