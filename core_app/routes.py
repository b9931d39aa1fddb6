"""Who owns which URL: rules compared the way Werkzeug matches them.

Repeated slashes are merged, a trailing slash is ignored, and any variable equals any
other, so two rules that could answer the same request are one rule. :class:`Owners`
keeps every prefix and rule claimed so far, each lookup O(1) or O(log N).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass

from werkzeug.routing import Rule

from .builtins import BUILTIN_NAME
from .errors import PluginConflictError, PluginError

HOST = "the host (core_app)"
#: The owner of rules added outside any plugin's hooks: the app's own code (run.py).
APP = "(app)"
APP_LABEL = "the app's own routes (added outside any plugin, e.g. in run.py)"
_ANY = "*"
_IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
#: Converters that match within one path segment; any other may match several.
_ONE_SEGMENT = {"default", "string", "int", "float", "uuid", "any"}
_CONVERTER = re.compile(r"<(?:(\w+)(?:\(.*?\))?:)?\w+>")
#: One part of a rule, as Werkzeug parses it (werkzeug.routing.rules._part_re).
RULE_PART = re.compile(
    r"(?P<static>[^<]+)|<(?:(?P<converter>[a-zA-Z_]\w*)(?:\((?P<arguments>.*?)\))?:)?"
    r"(?P<variable>[a-zA-Z_]\w*)>"
)


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
        while below < len(self.sorted_prefixes) and within(self.sorted_prefixes[below], prefix):
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


def _static_part(route: Route) -> str:
    fixed = []
    for segment in route.segments:
        if "<" in segment:
            break
        fixed.append(segment)
    return "/" + "/".join(fixed)


def within(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or lies below it (prefix has no trailing slash)."""
    return path == prefix or path.startswith(prefix + "/")
