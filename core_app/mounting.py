"""Mount plugin blueprints, refusing every overlap before it reaches the app.

A blueprint is registered on the real app inside a transaction: the URL rules it adds
are held back, and what it changes on the app is remembered. Only a blueprint that stays
inside its own prefix, claims no rule another owner has and replaces no host error
handler gets its rules committed; a refused one is rolled back and leaves nothing behind.
Every check is a lookup, so mounting N plugins costs O(N).
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask

from .errors import PluginConflictError, PluginDeclarationError, PluginError
from .plugins import PluginHost
from .records import PluginRecord

HOST = "the host (core_app)"
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
#: The app's registries keyed by blueprint name, with None for app-wide entries.
_SCOPED_REGISTRIES = (
    "error_handler_spec",
    "before_request_funcs",
    "after_request_funcs",
    "teardown_request_funcs",
    "url_value_preprocessors",
    "url_default_functions",
    "template_context_processors",
)


@dataclass
class StagedRule:
    """A call to ``add_url_rule`` held back until the blueprint is accepted."""

    rule: str
    endpoint: str | None
    view_func: Any
    provide_automatic_options: bool | None
    options: dict[str, Any]

    @property
    def methods(self) -> frozenset[str]:
        """The methods the rule will answer, as Flask works them out (HEAD, OPTIONS aside)."""
        methods = self.options.get("methods") or getattr(self.view_func, "methods", None)
        if isinstance(methods, str) or methods is None:
            methods = ("GET",)
        return frozenset(m.upper() for m in methods) - _IGNORED_METHODS


class CoreApp(Flask):
    """A Flask app whose routes all come from plugin blueprints.

    Once the plugins are mounted, adding a route directly to the app is refused: a
    route outside a plugin's blueprint would have no owner to blame or to disable.
    """

    sealed = False
    _staged: list[StagedRule] | None = None

    def add_url_rule(
        self,
        rule: str,
        endpoint: str | None = None,
        view_func: Any = None,
        provide_automatic_options: bool | None = None,
        **options: Any,
    ) -> None:
        if self.sealed:
            raise RuntimeError(
                f"Cannot add the route {rule!r} after start-up: declare it on the "
                "plugin's blueprint (core_app_blueprint) instead."
            )
        if self._staged is not None:
            self._staged.append(
                StagedRule(rule, endpoint, view_func, provide_automatic_options, options)
            )
            return
        super().add_url_rule(rule, endpoint, view_func, provide_automatic_options, **options)

    @contextmanager
    def acting_for(self, record: PluginRecord) -> Iterator[None]:
        """Run a hook of ``record``: every route that appears meanwhile is that plugin's."""
        yield

    @contextmanager
    def staging(self) -> Iterator[list[StagedRule]]:
        """Hold back the URL rules added inside the block."""
        staged: list[StagedRule] = []
        self._staged = staged
        try:
            yield staged
        finally:
            self._staged = None

    def commit(self, staged: list[StagedRule]) -> None:
        for s in staged:
            self.add_url_rule(
                s.rule, s.endpoint, s.view_func, s.provide_automatic_options, **s.options
            )


@dataclass
class _Snapshot:
    """What a blueprint registration may change on the app, to roll it back."""

    app: Flask
    blueprints: set[str] = field(init=False)
    keys: dict[str, set[Any]] = field(init=False)
    app_wide: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.blueprints = set(self.app.blueprints)
        self.keys = {attr: set(getattr(self.app, attr)) for attr in _SCOPED_REGISTRIES}
        self.app_wide = {
            attr: _copy(getattr(self.app, attr).get(None)) for attr in _SCOPED_REGISTRIES
        }

    def added_error_handlers(self) -> list[str]:
        before = self.app_wide["error_handler_spec"] or {}
        after = self.app.error_handler_spec.get(None, {})
        return sorted(str(code) for code in after if after[code] != before.get(code))

    def restore(self) -> None:
        for name in set(self.app.blueprints) - self.blueprints:
            del self.app.blueprints[name]
        for attr in _SCOPED_REGISTRIES:
            registry = getattr(self.app, attr)
            for key in set(registry) - self.keys[attr]:
                del registry[key]
            if self.app_wide[attr] is not None:
                registry[None] = self.app_wide[attr]


def _copy(value: Any) -> Any:
    """A copy two levels deep (app-wide entries are lists, or defaultdicts of dicts)."""
    copied = copy.copy(value)
    if isinstance(copied, dict):
        for key, inner in copied.items():
            copied[key] = copy.copy(inner)
    return copied


class Mounter:
    """Mounts the blueprints of one app and remembers who owns each prefix and rule."""

    def __init__(self, app: CoreApp, host: PluginHost) -> None:
        self.app = app
        self.host = host
        self.prefixes: dict[str, str] = {}
        self.sorted_prefixes: list[str] = []
        self.host_paths: list[str] = []
        self.rules: dict[tuple[str, str], str] = {}
        self.blueprints: dict[str, str] = {}

    def mount_all(self) -> None:
        self.host.each(self.mount)

    def mount(self, record: PluginRecord) -> None:
        blueprint = self.host.call(record, "core_app_blueprint", app=self.app)
        if blueprint is None:
            return
        if not isinstance(blueprint, Blueprint):
            raise PluginDeclarationError(
                record.name,
                f"core_app_blueprint() returned {blueprint!r}, not a flask.Blueprint.",
                "return the plugin's Blueprint (or None for a plugin without routes).",
            )
        prefix = None if record.builtin else self._prefix(record, blueprint)
        owner = self.blueprints.get(blueprint.name)
        if owner is not None:
            raise PluginConflictError(
                record.name,
                f"its blueprint is named {blueprint.name!r}, like the blueprint of {owner}.",
                "give the blueprint a name of its own, such as the plugin name.",
                other=owner,
            )
        staged = self._register(record, blueprint, prefix)
        label = HOST if record.builtin else f"plugin {record.name!r}"
        self.blueprints[blueprint.name] = label
        if prefix:
            self.prefixes[prefix] = label
            bisect.insort(self.sorted_prefixes, prefix)
        for rule in staged:
            for method in rule.methods:
                self.rules[rule.rule, method] = label
            if record.builtin:
                self.host_paths.append(_static_part(rule.rule))
        record.url_prefix = prefix
        record.blueprint = blueprint.name
        record.routes = sorted({rule.rule for rule in staged})

    def _register(
        self, record: PluginRecord, blueprint: Blueprint, prefix: str | None
    ) -> list[StagedRule]:
        """Register the blueprint, check what it adds, and commit it or roll it back."""
        snapshot = _Snapshot(self.app)
        try:
            with self.app.staging() as staged:
                self.app.register_blueprint(blueprint, url_prefix=prefix)
            self._check(record, staged, snapshot, prefix)
        except PluginError:
            snapshot.restore()
            raise
        except Exception as exc:
            snapshot.restore()
            raise PluginDeclarationError(
                record.name,
                f"its blueprint cannot be registered: {type(exc).__name__}: {exc}",
                "fix the blueprint's routes (see the error above).",
            ) from exc
        self.app.commit(staged)
        return staged

    def _check(
        self,
        record: PluginRecord,
        staged: list[StagedRule],
        snapshot: _Snapshot,
        prefix: str | None,
    ) -> None:
        handlers = snapshot.added_error_handlers()
        if handlers and not record.builtin:
            raise PluginConflictError(
                record.name,
                f"its blueprint registers app-wide error handlers for {handlers}, "
                "which would replace the host's JSON errors.",
                "use @blueprint.errorhandler (scoped to the plugin), not app_errorhandler.",
                other=HOST,
            )
        for rule in staged:
            for method in sorted(rule.methods):
                owner = self.rules.get((rule.rule, method))
                if owner is not None:
                    raise PluginConflictError(
                        record.name,
                        f"its route {method} {rule.rule} is already served by {owner}.",
                        "remove or rename one of the two routes.",
                        other=owner,
                    )
            if prefix and not _within(rule.rule, prefix):
                raise PluginConflictError(
                    record.name,
                    f"it adds the route {rule.rule!r} outside its prefix {prefix!r}.",
                    "declare every route on the plugin's blueprint.",
                    other=HOST,
                )
            endpoint = rule.endpoint or getattr(rule.view_func, "__name__", None)
            if endpoint in self.app.view_functions:
                raise PluginConflictError(
                    record.name,
                    f"its endpoint {endpoint!r} is taken.",
                    "declare every route on the plugin's blueprint.",
                    other=HOST,
                )

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
        normalized = "/" + prefix.strip("/")
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
        for path in self.host_paths:
            if _within(normalized, path) or _within(path, normalized):
                raise PluginConflictError(
                    record.name,
                    f"its prefix {normalized!r} covers the host route {path!r}.",
                    f"choose another prefix (PLUGIN_URL_PREFIXES['{record.name}']).",
                    other=HOST,
                )
        taken = self._overlapping_prefix(normalized)
        if taken is not None:
            owner = self.prefixes[taken]
            raise PluginConflictError(
                record.name,
                f"its prefix {normalized!r} overlaps {taken!r} of {owner}.",
                f"give one of them another prefix with PLUGIN_URL_PREFIXES"
                f"['{record.name}'] in the host config.",
                other=owner,
            )
        return normalized

    def _overlapping_prefix(self, prefix: str) -> str | None:
        """A taken prefix that is ``prefix``, above it or below it."""
        path = prefix
        while path:
            if path in self.prefixes:
                return path
            path = path.rpartition("/")[0]
        below = bisect.bisect_left(self.sorted_prefixes, prefix + "/")
        if below < len(self.sorted_prefixes) and _within(self.sorted_prefixes[below], prefix):
            return self.sorted_prefixes[below]
        return None


def _static_part(rule: str) -> str:
    return rule.split("<", 1)[0].rstrip("/") or "/"


def _within(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or lies below it (prefix has no trailing slash)."""
    return path == prefix or path.startswith(prefix + "/")
