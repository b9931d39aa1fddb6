"""Mount plugin blueprints so that no plugin can take what belongs to another.

Every rule that appears on the app is attributed and checked by the app itself
(:mod:`core_app.hostapp`); rules are compared as Werkzeug matches them
(:mod:`core_app.routes`).

Mounting is planned before anything reaches the app. Each blueprint is registered first
on a throwaway app (the probe) to see its rules and what it does app-wide; then every
plugin's place is decided: where two plugins clash, the one that served at the previous
start (``instance/mounted.json``) keeps its place, and when neither did, neither is
mounted. Only then is each accepted blueprint registered, once, on the real app: a
refused one leaves nothing behind. Every check is a lookup, so mounting N plugins costs
O(N).
"""

from __future__ import annotations

import logging
from collections import ChainMap
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask
from werkzeug.routing import Map, Rule, RuleFactory, parse_converter_args

from .builtins import BUILTIN_NAME
from .errors import PluginConflictError, PluginDeclarationError, PluginError
from .hostapp import (
    MOUNTED_FILE,
    CoreApp,
    app_wide_added,
    app_wide_counts,
    copy_registry,
    read_mounted,
)
from .plugins import PluginHost
from .records import PluginRecord
from .routes import HOST, RULE_PART, Route, label, within

log = logging.getLogger("core_app.mounting")


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
            if within(normalized, path) or within(path, normalized):
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
            name: copy_registry(value)
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
            setattr(probe, name, copy_registry(value))
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
            match = RULE_PART.match(text, position)
            if match is None:
                raise ValueError(f"malformed url rule: {text!r}")
            if match["variable"]:
                name = match["converter"] or "default"
                if name not in self.converters:
                    raise LookupError(f"the converter {name!r} does not exist")
                args, kwargs = parse_converter_args(match["arguments"] or "")
                self.converters[name](self, *args, **kwargs)
            position = match.end()
