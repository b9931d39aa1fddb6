"""Load plugins into a pluggy manager and keep one record per plugin.

Loading follows tox's order: add the hookspecs, register the built-ins, register the
plugins this process's role needs, then ``check_pending`` so that a misspelt hook is an
error. Each hook is called for one plugin at a time (see :mod:`core_app.hookspecs`), so
every result and every failure belongs to the plugin whose implementation produced it;
in lenient mode a failing plugin is unregistered and reported while the others carry on.
"""

from __future__ import annotations

import graphlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pluggy
from flask import Flask

from . import hookspecs
from .config import is_production
from .dependencies import cycle_errors, dependency_error, load_order
from .discovery import PluginSource, check_host_version, installed_plugins
from .errors import (
    ConfigError,
    PluginConflictError,
    PluginDeclarationError,
    PluginError,
    PluginHookError,
    PluginImportError,
)
from .records import DISABLED, FAILED, LOADED, PluginRecord
from .roles import Role

log = logging.getLogger("core_app.plugins")

#: pluggy implementation options that change how a hook is called. Each hook is called
#: for one plugin at a time, where these would mean nothing, so they are refused.
UNSUPPORTED_OPTIONS = ("wrapper", "hookwrapper", "tryfirst", "trylast", "optionalhook")


class PluginHost:
    """The plugin manager of one app, with a record of every plugin seen."""

    def __init__(
        self, app: Flask, role: Role, extra_plugins: Mapping[str, object] | None = None
    ) -> None:
        self.app = app
        self.role = role
        self.strict = app.config["PLUGIN_ERRORS"] == "raise" and not role.lenient
        self.trace = bool(app.config["TRACE_HOOKS"])
        if self.trace and not log.handlers:  # tracing is asked for: show it unconfigured too
            log.addHandler(logging.StreamHandler())
            log.setLevel(logging.INFO)
        self.pm = pluggy.PluginManager("core_app")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        #: Settings that name no installed plugin (an error in production).
        self.warnings: list[str] = []
        self._extra = dict(extra_plugins or {})
        #: Each plugin's implementation of each hook, read from pluggy at registration.
        self._impls: dict[str, dict[str, pluggy.HookImpl]] = {}

    # -- queries -------------------------------------------------------------------------

    def active(self, *, builtins: bool = True) -> list[PluginRecord]:
        """Loaded plugins in load order (dependencies first, then by name)."""
        return [r for r in self.records.values() if r.active and (builtins or not r.builtin)]

    def served(self) -> list[PluginRecord]:
        """Loaded plugins this process serves (not those loaded only as dependencies)."""
        return [r for r in self.active(builtins=False) if self.role.serves(r.name)]

    def plugins(self) -> list[PluginRecord]:
        """Every plugin but the built-ins, by name: what the report shows."""
        return sorted((r for r in self.records.values() if not r.builtin), key=lambda r: r.name)

    def failed(self) -> list[PluginRecord]:
        return [r for r in self.plugins() if r.failed]

    # -- failure policy ------------------------------------------------------------------

    def fail(self, record: PluginRecord, error: PluginError) -> None:
        """Raise in strict mode; otherwise unregister the plugin and report it."""
        error.with_origin(record.distribution, record.version)
        if self.strict or record.builtin:
            raise error
        log.error("%s Skipping this plugin (PLUGIN_ERRORS=skip).", error.message)
        record.status, record.error = FAILED, error
        if self.pm.get_plugin(record.name) is not None:
            self.pm.unregister(name=record.name)
        self._impls.pop(record.name, None)

    # -- loading -------------------------------------------------------------------------

    def load(self, builtins: Iterable[PluginSource]) -> None:
        """Discover and filter every plugin, import those this process's role needs (and
        what they depend on), then check their hooks and order them."""
        for source in builtins:
            record = self.records[source.name] = PluginRecord(source, builtin=True)
            self._import_and_register(record)
        cache = self.app.instance_path if self.app.config["DISCOVERY_CACHE"] else None
        groups = _group_by_name([*installed_plugins(cache), *self._extra_sources()])
        self._check_names_in_settings(set(groups))
        wanted: list[PluginRecord] = []
        for name, group in groups.items():
            record = self.records.setdefault(name, PluginRecord(group[0]))
            if record.builtin:
                self.fail(PluginRecord(group[0]), _name_taken_by_host(group[0]))
            elif not self._allowed(name):  # excluded: nothing about it can stop the start
                record.enabled = False
                record.status, record.reason = DISABLED, "excluded by PLUGINS / DISABLED_PLUGINS"
            elif len(group) > 1:
                self.fail(record, _duplicate_name(group))
            elif not self.role.serves(name):
                record.status = DISABLED
                record.reason = f"not needed by this process ({self.role.describe()})"
            else:
                wanted.append(record)
        self._load_with_dependencies(wanted)
        self._check_pending()
        self._order_by_dependencies()

    def _extra_sources(self) -> list[PluginSource]:
        return [PluginSource(name, repr(obj), obj=obj) for name, obj in self._extra.items()]

    def _check_names_in_settings(self, installed: set[str]) -> None:
        """A plugin name that matches no installed plugin is a typo until shown otherwise:
        an allowlist with a typo would start a production host with no plugins at all."""
        config = self.app.config
        named = {
            "PLUGINS": config["PLUGINS"] or [],
            "DISABLED_PLUGINS": config["DISABLED_PLUGINS"],
            "PLUGIN_URL_PREFIXES": list(config["PLUGIN_URL_PREFIXES"]),
            "PLUGIN_QUEUES": list(config["PLUGIN_QUEUES"]),
        }
        known = ", ".join(sorted(installed)) or "none"
        for key, names in named.items():
            unknown = sorted(set(names) - installed)
            if not unknown:
                continue
            message = (
                f"{key} names {', '.join(map(repr, unknown))}, but no such plugin is "
                f"installed (installed: {known}). Fix the spelling, install the plugin, or "
                f"remove the name from CORE_APP_{key}."
            )
            if is_production(self.app):
                raise ConfigError(message)
            log.warning(message)
            self.warnings.append(message)
        missing = sorted(set(self.role.plugins or ()) - installed)
        if missing:
            raise ConfigError(
                f"This process serves {', '.join(map(repr, missing))}, but no such plugin "
                f"is installed (installed: {known})."
            )

    def _load_with_dependencies(self, wanted: list[PluginRecord]) -> None:
        """Import the wanted plugins, then the plugins they need, transitively."""
        pending, seen = list(wanted), {record.name for record in wanted}
        while pending:
            record = pending.pop(0)
            record.status, record.reason = LOADED, None
            self._load_one(record)
            if not record.active:
                continue
            try:
                self._read_dependencies(record)
            except PluginError as error:
                self.fail(record, error)
                continue
            for name in sorted(record.dependencies):
                needed = self.records.get(name)
                if needed is not None and needed.enabled and name not in seen:
                    seen.add(name)
                    pending.append(needed)

    def _load_one(self, record: PluginRecord) -> None:
        if not record.name.isidentifier():
            self.fail(
                record,
                PluginDeclarationError(
                    record.name,
                    "its entry-point name is not a valid Python identifier.",
                    'rename the entry point in [project.entry-points."core_app.plugins"], '
                    "e.g. 'my_plugin' instead of 'my-plugin'.",
                ),
            )
            return
        try:
            check_host_version(record.source)
        except PluginError as error:
            self.fail(record, error)
            return
        self._import_and_register(record)

    def _allowed(self, name: str) -> bool:
        """Whether PLUGINS (allowlist, None for all) and DISABLED_PLUGINS let it load."""
        allow, deny = self.app.config["PLUGINS"], self.app.config["DISABLED_PLUGINS"]
        return (allow is None or name in allow) and name not in deny

    def _import_and_register(self, record: PluginRecord) -> None:
        started = time.perf_counter()
        try:
            record.obj = record.source.load()
        except Exception as exc:  # any import-time failure is the plugin's
            self.fail(record, _import_error(record, exc))
            return
        finally:
            record.import_seconds = time.perf_counter() - started
        budget = float(self.app.config["PLUGIN_IMPORT_BUDGET"])
        if record.import_seconds > budget:
            self.fail(
                record,
                PluginImportError(
                    record.name,
                    f"importing {record.source.target!r} took {record.import_seconds:.1f} s, over "
                    f"the budget of {budget:g} s (PLUGIN_IMPORT_BUDGET).",
                    "move slow work out of import time (into a hook or a task), or raise "
                    "PLUGIN_IMPORT_BUDGET.",
                ),
            )
            return
        try:
            self.pm.register(record.obj, name=record.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            self._refuse_hooks(record, str(exc))
            return
        impls = self._own_hookimpls(record)
        refused = _refused_options(impls)
        if refused:
            self._refuse_hooks(record, refused)
            return
        self._impls[record.name] = {hook: found[0] for hook, found in impls.items()}

    def _own_hookimpls(self, record: PluginRecord) -> dict[str, list[pluggy.HookImpl]]:
        """The plugin's implementations by hook name, as pluggy registered them."""
        return {
            caller.name: [i for i in caller.get_hookimpls() if i.plugin is record.obj]
            for caller in self.pm.get_hookcallers(record.obj) or []
        }

    def _refuse_hooks(self, record: PluginRecord, cause: str) -> None:
        self.fail(
            record,
            PluginHookError(
                record.name,
                f"its hooks cannot be registered: {cause}",
                "make each @core_app.hookimpl match its hookspec in core_app.hookspecs "
                "(same name, arguments a subset of the spec's, one implementation per hook, "
                "no wrapper/tryfirst/trylast/optionalhook), and give each plugin its own "
                "module or object.",
            ),
        )

    def _check_pending(self) -> None:
        """pluggy's check, one offender at a time, so each is named and the rest stay."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin)
                if name is None:
                    raise
                self.fail(
                    self.records[name],
                    PluginHookError(
                        name,
                        f"it implements a hook that does not exist: {exc}",
                        "fix the spelling; the hooks are listed in core_app.hookspecs "
                        "(all start with 'core_app_').",
                    ),
                )

    # -- calling hooks -------------------------------------------------------------------

    def implemented_hooks(self, name: str) -> list[str]:
        """The hooks a plugin implements, as pluggy knows them."""
        plugin = self.pm.get_plugin(name)
        callers = self.pm.get_hookcallers(plugin) if plugin is not None else None
        return sorted(caller.name for caller in callers or [])

    def call(self, record: PluginRecord, hook_name: str, **kwargs: Any) -> Any:
        """Call one plugin's implementation of a hook; a raise becomes PluginHookError."""
        impl = self._impls.get(record.name, {}).get(hook_name)
        if impl is None:
            return None
        args = [kwargs[arg] for arg in impl.argnames]
        started = time.perf_counter()
        try:
            with self._scope(record):
                return impl.function(*args)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginHookError(
                record.name,
                f"{hook_name}() raised {type(exc).__name__}: {exc}",
                f"fix {hook_name} in {impl.function.__module__}, or disable the plugin "
                f"with CORE_APP_DISABLED_PLUGINS={record.name}.",
            ) from exc
        finally:
            if self.trace:
                log.info(
                    "hook %s plugin=%s args=%s took %.3f ms",
                    hook_name,
                    record.name,
                    {arg: kwargs[arg] for arg in impl.argnames},
                    (time.perf_counter() - started) * 1000,
                )

    def _scope(self, record: PluginRecord) -> AbstractContextManager[None]:
        """Where a plugin's hook runs: routes it adds on the app are checked as its own."""
        acting_for = getattr(self.app, "acting_for", None)
        return acting_for(record) if acting_for and not record.builtin else nullcontext()

    def each(self, action: Callable[[PluginRecord], None], *, builtins: bool = True) -> None:
        """Run ``action`` for every active plugin; a PluginError fails only that plugin."""
        for record in self.active(builtins=builtins):
            try:
                action(record)
            except PluginError as error:
                self.fail(record, error)

    # -- dependencies --------------------------------------------------------------------

    def _order_by_dependencies(self) -> None:
        changed = True
        while changed:  # a plugin whose dependency failed fails too
            changed = False
            for record in self.active(builtins=False):
                error = dependency_error(record, self.records)
                if error:
                    self.fail(record, error)
                    changed = True
        order = self._topological_order()
        self.records = {name: self.records[name] for name in order} | self.records

    def _read_dependencies(self, record: PluginRecord) -> None:
        declared = self.call(record, "core_app_dependencies") or {}
        if not isinstance(declared, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in declared.items()
        ):
            raise PluginDeclarationError(
                record.name,
                f"core_app_dependencies() returned {declared!r}.",
                "return a dict of plugin name to version specifier, e.g. "
                "{'notifications': '>=1.0'} ('' for any version).",
            )
        record.dependencies = dict(declared)

    def _topological_order(self) -> list[str]:
        try:
            return load_order(self.active())
        except graphlib.CycleError as exc:
            for name, error in cycle_errors(exc.args[1]).items():
                self.fail(self.records[name], error)
            return self._topological_order()


def _refused_options(impls: Mapping[str, list[pluggy.HookImpl]]) -> str:
    """Why these implementations cannot be called as the hookspecs say, or ''."""
    for hook, found in sorted(impls.items()):
        if len(found) > 1:
            where = ", ".join(impl.function.__qualname__ for impl in found)
            return f"{hook} is implemented {len(found)} times ({where}); one is called."
        options = [o for o in UNSUPPORTED_OPTIONS if getattr(found[0], o)]
        if options:
            return (
                f"{found[0].function.__qualname__} implements {hook} with "
                f"{', '.join(o + '=True' for o in options)}, which core_app does not honour "
                "(each plugin's implementation is called on its own)."
            )
    return ""


def _group_by_name(sources: Iterable[PluginSource]) -> dict[str, list[PluginSource]]:
    groups: dict[str, list[PluginSource]] = {}
    for source in sources:
        groups.setdefault(source.name, []).append(source)
    return groups


def _duplicate_name(group: list[PluginSource]) -> PluginError:
    origins = [f"{s.distribution} {s.version}" for s in group]
    return PluginConflictError(
        group[0].name,
        f"{len(group)} distributions declare this plugin name: {', '.join(origins)}.",
        "uninstall all but one of them, or rename the entry point of the others.",
        distribution=group[0].distribution,
        version=group[0].version,
        other=", ".join(s.distribution or "?" for s in group[1:]),
    )


def _name_taken_by_host(source: PluginSource) -> PluginError:
    return PluginConflictError(
        source.name,
        "this name is reserved for the host's built-in plugin.",
        "rename the entry point.",
        distribution=source.distribution,
        version=source.version,
        other="core_app (host)",
    )


def _import_error(record: PluginRecord, exc: Exception) -> PluginError:
    target = record.source.target
    module = target.split(":")[0].strip()
    missing = (
        isinstance(exc, ModuleNotFoundError)
        and bool(exc.name)
        and (module == exc.name or module.startswith(f"{exc.name}."))
    )
    if missing or isinstance(exc, AttributeError):
        cause = f"its entry point {target!r} points at nothing ({type(exc).__name__}: {exc})."
    else:
        cause = f"importing {target!r} raised {type(exc).__name__}: {exc}"
    return PluginImportError(
        record.name,
        cause,
        f"reinstall {record.distribution or 'the plugin'} or fix its entry point, or "
        f"disable it with CORE_APP_DISABLED_PLUGINS={record.name}.",
    )
