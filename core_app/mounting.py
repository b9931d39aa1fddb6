"""Mount plugin blueprints, refusing every overlap before it reaches the real app.

Each blueprint is first registered on a throwaway *probe* app, which shows exactly
which rules and app-wide handlers it would add. Only a blueprint that stays inside its
own prefix, claims no rule another owner has, and replaces no host handler is then
registered on the real app; so a refused plugin leaves nothing behind.
"""

from __future__ import annotations

from flask import Blueprint, Flask

from .errors import PluginConflictError, PluginDeclarationError, PluginError
from .plugins import PluginHost
from .records import PluginRecord

_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})


class Mounter:
    """Mounts the blueprints of one app and remembers who owns each prefix and rule."""

    def __init__(self, app: Flask, host: PluginHost) -> None:
        self.app = app
        self.host = host
        self.probe = _new_probe()
        self.prefixes: dict[str, str] = {}
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
        try:
            rules = self._probe(record, blueprint, prefix)
        except PluginError:
            self.probe = _new_probe()  # what a refused blueprint left must not blame the next
            raise
        self.app.register_blueprint(blueprint, url_prefix=prefix)
        label = self._label(record)
        self.blueprints[blueprint.name] = label
        if prefix:
            self.prefixes[prefix] = label
        for rule, methods in rules:
            for method in methods:
                self.rules[rule, method] = label
        record.url_prefix = prefix
        record.blueprint = blueprint.name
        record.routes = sorted({rule for rule, _ in rules})

    @staticmethod
    def _label(record: PluginRecord) -> str:
        return "the host (core_app)" if record.builtin else f"plugin {record.name!r}"

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
                other="the host (core_app)",
            )
        if "<" in normalized:
            raise PluginDeclarationError(
                record.name,
                f"its url_prefix {normalized!r} has a variable part.",
                "use a fixed prefix; put variables in the routes.",
            )
        for rule, method in self.rules:
            if self.rules[rule, method] == "the host (core_app)" and _overlaps(
                normalized, _static_part(rule)
            ):
                raise PluginConflictError(
                    record.name,
                    f"its prefix {normalized!r} covers the host route {rule!r}.",
                    f"choose another prefix (PLUGIN_URL_PREFIXES['{record.name}']).",
                    other="the host (core_app)",
                )
        for taken, owner in self.prefixes.items():
            if _overlaps(normalized, taken):
                raise PluginConflictError(
                    record.name,
                    f"its prefix {normalized!r} overlaps {taken!r} of {owner}.",
                    f"give one of them another prefix with PLUGIN_URL_PREFIXES"
                    f"['{record.name}'] in the host config.",
                    other=owner,
                )
        return normalized

    def _probe(
        self, record: PluginRecord, blueprint: Blueprint, prefix: str | None
    ) -> list[tuple[str, frozenset[str]]]:
        """Register on the probe app and check what the blueprint would add."""
        known = len(list(self.probe.url_map.iter_rules()))
        # Compare the handlers themselves, not just their codes: a plugin refused earlier
        # leaves its handlers on the probe, and a later one may register the same code.
        before_handlers = {
            code: dict(handlers)
            for code, handlers in self.probe.error_handler_spec.get(None, {}).items()
        }
        try:
            self.probe.register_blueprint(blueprint, url_prefix=prefix)
        except Exception as exc:
            raise PluginDeclarationError(
                record.name,
                f"its blueprint cannot be registered: {type(exc).__name__}: {exc}",
                "fix the blueprint's routes (see the error above).",
            ) from exc
        added_handlers = {
            code
            for code, handlers in self.probe.error_handler_spec.get(None, {}).items()
            if dict(handlers) != before_handlers.get(code)
        }
        if added_handlers and not record.builtin:
            raise PluginConflictError(
                record.name,
                f"its blueprint registers app-wide error handlers for "
                f"{sorted(map(str, added_handlers))}, which would replace the host's JSON errors.",
                "use @blueprint.errorhandler (scoped to the plugin), not app_errorhandler.",
                other="the host (core_app)",
            )
        rules = []
        for rule in list(self.probe.url_map.iter_rules())[known:]:
            methods = frozenset(rule.methods or ()) - _IGNORED_METHODS
            for method in sorted(methods):
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
                    other="the host (core_app)",
                )
            rules.append((rule.rule, methods))
        return rules


def _new_probe() -> Flask:
    return Flask("core_app.probe", static_folder=None)


def _static_part(rule: str) -> str:
    return rule.split("<", 1)[0].rstrip("/") or "/"


def _within(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or lies below it (prefix has no trailing slash)."""
    return path == prefix or path.startswith(prefix + "/")


def _overlaps(a: str, b: str) -> bool:
    """Whether one path is the other or lies below it."""
    a, b = a.rstrip("/") or "/", b.rstrip("/") or "/"
    return "/" in (a, b) or _within(a, b) or _within(b, a)
