"""Mount plugin blueprints so that no plugin can take what belongs to another.

Every URL rule reaches the app through its URL map, and the map asks the app first
(:class:`CoreApp`): a rule that appears while a plugin's hook runs, or while its blueprint
is registered, is that plugin's (:meth:`CoreApp.acting_for`), and must lie inside its
prefix and clash with no other owner; any other rule is the app owner's (``run.py``) and
must stay out of every plugin's prefix. Rules are compared as Werkzeug matches them:
repeated slashes merged, a trailing slash ignored, any variable equal to any other.

Mounting is planned before anything reaches the app. Each blueprint is registered first
on a throwaway app (the probe) to see its rules and what it does app-wide; then every
plugin's place is decided: where two plugins clash, the one that served at the previous
start (``instance/mounted.json``) keeps its place, and when neither did, neither is
mounted. Only then is each accepted blueprint registered, once, on the real app: a
refused one leaves nothing behind. Every check is a lookup, so mounting N plugins costs
O(N).
"""

from __future__ import annotations

import bisect
import copy
import json
import logging
import os
import re
from collections import ChainMap
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask
from werkzeug.routing import Map, Rule, RuleFactory, parse_converter_args

from .builtins import BUILTIN_NAME
from .errors import PluginConflictError, PluginDeclarationError, PluginError
from .plugins import PluginHost
from .records import PluginRecord

log = logging.getLogger("core_app.mounting")

HOST = "the host (core_app)"
#: The owner of rules added outside any plugin's hooks: the app's own code (run.py).
APP = "(app)"
APP_LABEL = "the app's own routes (added outside any plugin, e.g. in run.py)"
#: What was mounted at the last successful start: plugin name -> prefix.
MOUNTED_FILE = "mounted.json"
_ANY = "*"
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
#: Converters that match within one path segment; any other may match several.
_ONE_SEGMENT = {"default", "string", "int", "float", "uuid", "any"}
_CONVERTER = re.compile(r"<(?:(\w+)(?:\(.*?\))?:)?\w+>")
#: One part of a rule, as Werkzeug parses it (werkzeug.routing.rules._part_re).
_PART = re.compile(
    r"(?P<static>[^<]+)|<(?:(?P<converter>[a-zA-Z_]\w*)(?:\((?P<arguments>.*?)\))?:)?"
    r"(?P<variable>[a-zA-Z_]\w*)>"
)
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


def label(owner: str) -> str:
    if owner == BUILTIN_NAME:
        return HOST
    return APP_LABEL if owner == APP else f"plugin {owner!r}"


@dataclass(frozen=True)
class Route:
    """One URL rule as written, and as Werkzeug matches it."""

    rule: str
    #: The methods it answers (HEAD and OPTIONS aside); None for every method.
    methods: frozenset[str] | None
    endpoint: str | None
    #: Path segments, repeated and trailing slashes dropped.
    segments: tuple[str, ...]
    #: The segments with every variable as ``<>``: equal keys match the same paths.
    key: str

    @classmethod
    def of(cls, rule: Rule) -> Route:
        methods = None
        if rule.methods is not None:
            methods = frozenset(rule.methods - _IGNORED_METHODS or rule.methods)
        segments = tuple(s for s in rule.rule.split("/") if s)
        key = "/" + "/".join("<>" if "<" in s else s for s in segments)
        return cls(rule.rule, methods, rule.endpoint, segments, key)

    @property
    def method(self) -> str:
        return min(self.methods) if self.methods else "ANY"

    def inside(self, prefix: str) -> bool:
        parts = prefix.split("/")[1:]
        return self.segments[: len(parts)] == tuple(parts)

    def reaches(self, prefix: str) -> bool:
        """Whether the rule may match a path at or below ``prefix`` (a variable matches
        any segment, a converter such as ``path`` any rest)."""
        parts = prefix.split("/")[1:]
        for i, part in enumerate(parts):
            if i >= len(self.segments):
                return False
            segment = self.segments[i]
            if "<" in segment:
                if any(c and c not in _ONE_SEGMENT for c in _CONVERTER.findall(segment)):
                    return True
            elif segment != part:
                return False
        return True


class Owners:
    """Who owns each prefix, rule, endpoint and blueprint name of one app."""

    def __init__(self) -> None:
        self.prefixes: dict[str, str] = {}
        self.sorted_prefixes: list[str] = []
        self.host_paths: list[str] = []
        self.rules: dict[str, dict[str, tuple[str, str]]] = {}
        self.endpoints: dict[str, str] = {}
        self.blueprints: dict[str, str] = {}
        #: Plugins whose place is decided: name -> prefix (None: no blueprint).
        self.mounted: dict[str, str | None] = {}
        #: What served at the previous start (instance/mounted.json).
        self.previous: dict[str, str] = {}
        #: Whether this process mounts every enabled plugin (then it may remember them).
        self.complete = False

    def claim_prefix(self, prefix: str, owner: str) -> None:
        self.prefixes[prefix] = owner
        bisect.insort(self.sorted_prefixes, prefix)

    def overlapping(self, prefix: str) -> list[str]:
        """Taken prefixes equal to ``prefix``, above it or below it."""
        found = []
        path = prefix
        while path:
            if path in self.prefixes:
                found.append(path)
            path = path.rpartition("/")[0]
        below = bisect.bisect_left(self.sorted_prefixes, prefix + "/")
        while below < len(self.sorted_prefixes) and _within(self.sorted_prefixes[below], prefix):
            found.append(self.sorted_prefixes[below])
            below += 1
        return found

    def forget(self, owners: set[str]) -> None:
        """Drop the claims of plugins refused while places were decided."""
        self.prefixes = {p: o for p, o in self.prefixes.items() if o not in owners}
        self.sorted_prefixes = sorted(self.prefixes)
        self.blueprints = {b: o for b, o in self.blueprints.items() if o not in owners}

    def clash(self, route: Route, owner: str) -> tuple[str, str, str] | None:
        """Another owner's (owner, method, rule) that matches the same requests."""
        for method, (other, rule) in self.rules.get(route.key, {}).items():
            if other != owner and (
                route.methods is None or method == _ANY or method in route.methods
            ):
                return other, route.method if method == _ANY else method, rule
        return None

    def covering(self, route: Route) -> str | None:
        """The taken prefix that the route's leading fixed segments lie under."""
        fixed = []
        for segment in route.segments:
            if "<" in segment:
                break
            fixed.append(segment)
        for end in range(len(fixed), 0, -1):
            prefix = "/" + "/".join(fixed[:end])
            if prefix in self.prefixes:
                return prefix
        return None

    def check(self, owner: str, routes: Iterable[Route], prefix: str | None) -> None:
        """Refuse a route of ``owner`` (a plugin) that clashes or leaves its prefix."""
        for route in routes:
            hit = self.clash(route, owner)
            if hit is not None:
                other, method, rule = hit
                raise PluginConflictError(
                    owner,
                    f"its route {method} {route.rule} is already served by {label(other)}"
                    + (f" (as {rule})." if rule != route.rule else "."),
                    "remove or rename one of the two routes.",
                    other=label(other),
                )
            if owner != BUILTIN_NAME and (prefix is None or not route.inside(prefix)):
                raise _outside(owner, route, prefix, self.covering(route), self.prefixes)
            taken = self.endpoints.get(route.endpoint or "", owner)
            if taken != owner:
                raise PluginConflictError(
                    owner,
                    f"its route {route.rule} uses the endpoint {route.endpoint!r} of "
                    f"{label(taken)}.",
                    "give the view an endpoint of its own, or declare it on the plugin's "
                    "blueprint (its endpoints are named after the blueprint).",
                    other=label(taken),
                )

    def check_app_route(self, route: Route) -> None:
        """Refuse a route of the app's own code that reaches into a plugin's place."""
        hit = self.clash(route, APP)
        if hit is not None:
            other, method, rule = hit
            raise PluginConflictError(
                other,
                f"it serves {method} {rule}, which the app also adds as {route.rule} "
                "outside any plugin's hooks.",
                f"remove or rename the app's route {route.rule!r}.",
                other=APP_LABEL,
            )
        for prefix, other in self.prefixes.items():
            if route.reaches(prefix):
                raise PluginConflictError(
                    other,
                    f"the app adds the route {route.method} {route.rule} outside any "
                    f"plugin's hooks, and it reaches into this plugin's prefix {prefix!r}.",
                    f"move the app's route out of {prefix!r}, or mount the plugin "
                    f"elsewhere with PLUGIN_URL_PREFIXES['{other}'].",
                    other=APP_LABEL,
                )
        taken = self.endpoints.get(route.endpoint or "", APP)
        if taken != APP:
            raise PluginConflictError(
                taken,
                f"the app adds the route {route.rule} with this plugin's endpoint "
                f"{route.endpoint!r}.",
                "give the app's view an endpoint of its own.",
                other=APP_LABEL,
            )

    def claim(self, owner: str, routes: Iterable[Route]) -> None:
        for route in routes:
            taken = self.rules.setdefault(route.key, {})
            for method in route.methods or (_ANY,):
                taken.setdefault(method, (owner, route.rule))
            if route.endpoint is not None:
                self.endpoints.setdefault(route.endpoint, owner)
            if owner in (BUILTIN_NAME, APP):
                self.host_paths.append(_static_part(route))


def _outside(
    owner: str, route: Route, prefix: str | None, covering: str | None, prefixes: dict[str, str]
) -> PluginError:
    fix = "declare every route on the plugin's blueprint, under its prefix."
    if covering is not None and prefixes[covering] != owner:
        other = label(prefixes[covering])
        cause = (
            f"it adds the route {route.method} {route.rule} under the prefix {covering!r} of "
            f"{other}, outside its own prefix {prefix!r}."
        )
        return PluginConflictError(owner, cause, fix, other=other)
    if prefix is None:
        cause = f"it adds the route {route.rule!r} but mounts no blueprint to hold it."
    else:
        cause = f"it adds the route {route.rule!r} outside its prefix {prefix!r}."
    return PluginConflictError(owner, cause, fix, other=HOST)


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


@dataclass
class _Plan:
    """What one plugin's blueprint would add, found on the probe."""

    record: PluginRecord
    blueprint: Blueprint
    prefix: str | None
    routes: list[Route]
    held: list[tuple[Rule, bool]]
    app_hooks: list[str]

    @property
    def name(self) -> str:
        return self.record.name


class Mounter:
    """Plans, then mounts, the blueprints of one app."""

    def __init__(self, app: CoreApp, host: PluginHost) -> None:
        self.app = app
        self.host = host
        self.owners = app.owners
        self._probe: _Probe | None = None
        self._plans: dict[str, _Plan] = {}

    def mount_all(self) -> None:
        role = getattr(self.host, "role", None)
        self.owners.complete = role is None or role.plugins is None
        self.owners.previous = read_mounted(self.app.instance_path)
        self.host.each(self._plan)
        plans = list(self._plans.values())
        order = sorted(plans, key=lambda p: not self._served_before(p))
        for plan in order:
            self._attempt(plan, self._claim_place)
        self.owners.forget({p.name for p in plans if p.record.failed})
        for plan in order:
            self._attempt(plan, self._claim_routes)
        for plan in plans:
            self._attempt(plan, self._mount)

    def _attempt(self, plan: _Plan, step: Any) -> None:
        if not plan.record.active:
            return
        try:
            step(plan)
        except PluginError as error:
            self.app.discard(plan.held)
            self.host.fail(plan.record, error)

    # -- planning: nothing reaches the app -----------------------------------------------

    def _plan(self, record: PluginRecord) -> None:
        held: list[tuple[Rule, bool]] = []
        try:
            blueprint = self.host.call(record, "core_app_blueprint", app=self.app)
            held = self.app.take_pending(record)
            plan = self._probed(record, blueprint, held)
        except PluginError:
            self.app.discard(held or self.app.take_pending(record))
            raise
        if plan is None:
            self.owners.mounted[record.name] = None
            return
        if record.builtin:
            self.owners.blueprints[plan.blueprint.name] = record.name
            self.owners.claim(record.name, plan.routes)
        self._plans[record.name] = plan

    def _probed(
        self, record: PluginRecord, blueprint: Any, held: list[tuple[Rule, bool]]
    ) -> _Plan | None:
        if blueprint is None:
            if held:
                self.owners.check(record.name, [Route.of(held[0][0])], None)
            return None
        if not isinstance(blueprint, Blueprint):
            raise PluginDeclarationError(
                record.name,
                f"core_app_blueprint() returned {blueprint!r}, not a flask.Blueprint.",
                "return the plugin's Blueprint (or None for a plugin without routes).",
            )
        prefix = None if record.builtin else self._prefix(record, blueprint)
        if self._probe is None:
            self._probe = _Probe(self.app)
        try:
            rules, error_handlers, app_hooks = self._probe.register(blueprint, prefix)
        except Exception as exc:
            raise PluginDeclarationError(
                record.name,
                f"its blueprint cannot be registered: {type(exc).__name__}: {exc}",
                "fix the blueprint's routes (see the error above).",
            ) from exc
        if error_handlers and not record.builtin:
            raise PluginConflictError(
                record.name,
                f"its blueprint registers app-wide error handlers for {error_handlers} "
                "(app_errorhandler), which would replace the host's JSON errors.",
                "use @blueprint.errorhandler (scoped to the plugin), not app_errorhandler.",
                other=HOST,
            )
        routes = [Route.of(rule) for rule in rules] + [Route.of(rule) for rule, _ in held]
        return _Plan(record, blueprint, prefix, routes, held, app_hooks)

    def _prefix(self, record: PluginRecord, blueprint: Blueprint) -> str:
        configured = self.app.config["PLUGIN_URL_PREFIXES"].get(record.name)
        prefix = configured if configured is not None else blueprint.url_prefix
        where = "PLUGIN_URL_PREFIXES" if configured is not None else "its blueprint"
        if not prefix or not isinstance(prefix, str):
            raise PluginDeclarationError(
                record.name,
                f"{where} gives no url_prefix.",
                f"declare Blueprint(..., url_prefix='/api/{record.name}'), or set "
                f"PLUGIN_URL_PREFIXES['{record.name}'] in the host config.",
            )
        normalized = "/" + "/".join(part for part in prefix.split("/") if part)
        if normalized == "/":
            raise PluginConflictError(
                record.name,
                f"{where} mounts it at '/', over the host and every other plugin.",
                f"use a prefix of its own, such as '/api/{record.name}'.",
                other=HOST,
            )
        if "<" in normalized:
            raise PluginDeclarationError(
                record.name,
                f"its url_prefix {normalized!r} has a variable part.",
                "use a fixed prefix; put variables in the routes.",
            )
        for path in self.owners.host_paths:
            if _within(normalized, path) or _within(path, normalized):
                raise PluginConflictError(
                    record.name,
                    f"its prefix {normalized!r} covers the host route {path!r}.",
                    f"choose another prefix (PLUGIN_URL_PREFIXES['{record.name}']).",
                    other=HOST,
                )
        return normalized

    # -- deciding places: who keeps what -------------------------------------------------

    def _served_before(self, plan: _Plan) -> bool:
        return plan.record.builtin or (
            plan.prefix is not None and self.owners.previous.get(plan.name) == plan.prefix
        )

    def _claim_place(self, plan: _Plan) -> None:
        """Claim the blueprint name and prefix, or settle who keeps them."""
        if plan.record.builtin:
            return
        assert plan.prefix is not None
        # rival -> (what this plan is told, what the rival is told)
        rivals: dict[str, tuple[str, str]] = {}
        name = plan.blueprint.name
        owner = self.owners.blueprints.get(name)
        if owner is not None:
            rivals[owner] = (
                f"its blueprint is named {name!r}, like the blueprint of {label(owner)}.",
                f"plugin {plan.name!r} names its blueprint {name!r} too.",
            )
        for taken in self.owners.overlapping(plan.prefix):
            other = self.owners.prefixes[taken]
            rivals.setdefault(
                other,
                (
                    f"its prefix {plan.prefix!r} overlaps {taken!r} of {label(other)}.",
                    f"its prefix {taken!r} overlaps {plan.prefix!r} of plugin {plan.name!r}.",
                ),
            )
        if not rivals:
            self.owners.blueprints[name] = plan.name
            self.owners.claim_prefix(plan.prefix, plan.name)
            return
        kept = [r for r in rivals if r == BUILTIN_NAME or self._served_before(self._plans[r])]
        if self.host.strict or BUILTIN_NAME in rivals or (kept and not self._served_before(plan)):
            other = kept[0] if kept else next(iter(rivals))
            why = (
                f" That plugin served there at the previous start ({MOUNTED_FILE}): a "
                "plugin installed later cannot take its place."
                if kept and other != BUILTIN_NAME and not self.host.strict
                else ""
            )
            raise PluginConflictError(
                plan.name, rivals[other][0] + why, _fix(plan.name, other), other=label(other)
            )
        neither = (
            f" Neither served there alone at the previous start ({MOUNTED_FILE}), so "
            "neither is mounted."
        )
        for other, (_, told) in rivals.items():
            record = self.host.records[other]
            if record.active:
                error = PluginConflictError(
                    other, told + neither, _fix(plan.name, other), other=label(plan.name)
                )
                self.host.fail(record, error)
        other = next(iter(rivals))
        raise PluginConflictError(
            plan.name, rivals[other][0] + neither, _fix(plan.name, other), other=label(other)
        )

    def _claim_routes(self, plan: _Plan) -> None:
        if plan.record.builtin:
            return
        self.owners.check(plan.name, plan.routes, plan.prefix)
        self.owners.claim(plan.name, plan.routes)

    # -- mounting: each accepted blueprint, once -----------------------------------------

    def _mount(self, plan: _Plan) -> None:
        record = plan.record
        self.owners.mounted[record.name] = plan.prefix
        record.url_prefix = plan.prefix
        record.blueprint = plan.blueprint.name
        record.app_hooks = list(dict.fromkeys([*plan.app_hooks, *record.app_hooks]))
        with self.app.acting_for(record):
            self.app.register_blueprint(plan.blueprint, url_prefix=plan.prefix)
        self.app.commit(record.name, plan.held)
        plan.held = []
        record.routes = sorted({*record.routes, *(route.rule for route in plan.routes)})


def _fix(name: str, other: str) -> str:
    if other == BUILTIN_NAME:
        return f"rename the blueprint and choose another prefix (PLUGIN_URL_PREFIXES['{name}'])."
    return (
        f"give one of them a prefix and a blueprint name of its own (PLUGIN_URL_PREFIXES"
        f"['{name}'] or ['{other}'] in the host config; Blueprint(name, ...))."
    )


class _Probe:
    """A throwaway Flask app, made once: each blueprint is registered on it first, on a
    fresh URL map and fresh registries, to see what it would add."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.flask = probe = Flask(
            app.import_name,
            root_path=app.root_path,
            instance_path=app.instance_path,
            static_folder=None,
        )
        self.initial = {
            name: _copy(value)
            for name, value in vars(probe).items()
            if isinstance(value, dict | list) and name not in ("config", "extensions")
        }

    def register(
        self, blueprint: Blueprint, prefix: str | None
    ) -> tuple[list[Rule], list[str], list[str]]:
        """The blueprint's rules, its app-wide error handlers, and its other app-wide
        registrations (request hooks, template filters, commands)."""
        probe = self._fresh()
        before = app_wide_counts(probe)
        probe.register_blueprint(blueprint, url_prefix=prefix)
        handlers = sorted(
            str(code) if code is not None else exc.__name__
            for code, by_class in probe.error_handler_spec.get(None, {}).items()
            for exc in by_class
        )
        assert isinstance(probe.url_map, _ProbeMap)
        return probe.url_map.recorded, handlers, app_wide_added(probe, before)

    def _fresh(self) -> Flask:
        probe = self.flask
        vars(probe).pop("jinja_env", None)
        for name, value in self.initial.items():
            setattr(probe, name, _copy(value))
        probe.url_map = _ProbeMap(
            converters=self.app.url_map.converters, host_matching=self.app.url_map.host_matching
        )
        # Reads see the real app's settings; writes stay here.
        probe.config = ChainMap({}, self.app.config)  # type: ignore[assignment]
        probe.extensions = ChainMap({}, self.app.extensions)  # type: ignore[assignment]
        probe.cli.commands.clear()
        return probe


class _ProbeMap(Map):
    """The probe's URL map: it records each rule and checks its syntax, but compiles
    nothing (compiling is most of what a rule costs; the real app does it once)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: list[Rule] = []

    def add(self, rulefactory: RuleFactory) -> None:
        for rule in rulefactory.get_rules(self):
            for text in (rule.rule, rule.host or rule.subdomain or ""):
                self._check(text)
            self.recorded.append(rule)

    def _check(self, text: str) -> None:
        """Raise as Werkzeug would when it compiles ``text``: malformed, unknown converter
        or invalid converter arguments."""
        position = 0
        while position < len(text):
            match = _PART.match(text, position)
            if match is None:
                raise ValueError(f"malformed url rule: {text!r}")
            if match["variable"]:
                name = match["converter"] or "default"
                if name not in self.converters:
                    raise LookupError(f"the converter {name!r} does not exist")
                args, kwargs = parse_converter_args(match["arguments"] or "")
                self.converters[name](self, *args, **kwargs)
            position = match.end()


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


def _copy(value: Any) -> Any:
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


def _static_part(route: Route) -> str:
    fixed = []
    for segment in route.segments:
        if "<" in segment:
            break
        fixed.append(segment)
    return "/" + "/".join(fixed)


def _within(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or lies below it (prefix has no trailing slash)."""
    return path == prefix or path.startswith(prefix + "/")
