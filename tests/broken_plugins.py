"""Every kind of broken plugin, once: the table both runners of test_broken_plugins.py use.

A scenario is a set of fake installed distributions (tests/fakes.py), usually beside a
healthy plugin ``good``, and what must happen: which plugins are refused, with which
error class, what the refusal says besides the plugin's name, distribution and version
(its ``Fix:`` is checked for every one), which plugins keep serving and which URLs of
the refused ones must not answer 200.

Each builder takes ``make(name, module_source="", **kwargs) -> FakeDist`` (the
``fake_dist`` fixture in-process, :func:`fakes.make_plugin_dist` into a folder for the
subprocess runner), so the same scenario is written to disk the same way for both.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fakes import FakeDist, blueprint_source, needs_source
from flask import Flask

from core_app import (
    PluginConflictError,
    PluginDeclarationError,
    PluginDependencyError,
    PluginHookError,
    PluginImportError,
    PluginVersionError,
)
from core_app.discovery import host_version

Make = Callable[..., FakeDist]
_packages = itertools.count(1)


@dataclass
class Scenario:
    """A broken setup and what must happen to it."""

    #: Plugins that must be refused -> the distribution their error names.
    bad: dict[str, FakeDist]
    error: type[Exception]
    #: Texts every refusal of the scenario contains (besides plugin, distribution, version).
    says: list[str]
    #: Plugins that must keep serving: name -> URL answering 200 ``{"plugin": name}``.
    survivors: dict[str, str]
    #: Every fake distribution of the setup (bad, survivors, the other side of a clash).
    dists: list[FakeDist]
    #: URLs of the refused plugins' routes, which must not answer 200.
    bad_urls: list[str] = field(default_factory=list)
    #: The allowlist (PLUGINS); None: every plugin of ``dists``.
    allowed: list[str] | None = None
    #: Plugins that served alone at the previous start (the refused one is the newcomer).
    served_before: list[str] = field(default_factory=list)
    #: More settings, by config key (``PLUGIN_IMPORT_BUDGET``...).
    settings: dict[str, Any] = field(default_factory=dict)
    #: Refused after its blueprint was mounted (its tasks, its ready hook): its routes
    #: stay and answer 503 instead of never being there.
    late: bool = False

    @property
    def plugins(self) -> list[str]:
        if self.allowed is not None:
            return self.allowed
        return sorted({dist.plugin for dist in self.dists})


# -- the checks every refusal passes, whoever runs the scenario -----------------------


def check_message(message: str, name: str, dist: FakeDist, says: list[str]) -> None:
    """A refusal names the plugin, its distribution and version, the cause and a fix."""
    assert f"Plugin {name!r}" in message, message
    assert f"{dist.name} {dist.version}" in message, message
    assert "Fix:" in message and message.split("Fix:", 1)[1].strip(), message
    for text in says:
        assert text in message, (text, message)


def check_rows(scenario: Scenario, rows: Mapping[str, Mapping[str, Any]]) -> None:
    """Rows of ``plugins --json`` or of the doctor: refused ones failed (saying what the
    scenario says), the rest loaded."""
    for name, dist in scenario.bad.items():
        row = rows[name]
        assert row["status"] == "failed", row
        assert row["distribution"] == dist.name, row
        check_message(row["error"], name, dist, scenario.says)
    for name in scenario.survivors:
        assert rows[name]["status"] == "loaded", rows[name]


def check_ready(scenario: Scenario, status: int, body: Mapping[str, Any]) -> None:
    """``/ready`` answers 200 and lists the refused plugins under ``plugins.failed``."""
    assert status == 200, body
    failed = {entry["name"]: entry["error"] for entry in body["plugins"]["failed"]}
    assert set(scenario.bad) <= set(failed), failed
    for name, dist in scenario.bad.items():
        check_message(failed[name], name, dist, scenario.says)
    assert not set(scenario.bad) & set(body["plugins"]["loaded"])
    assert set(scenario.survivors) <= set(body["plugins"]["loaded"])


def check_answers(scenario: Scenario, answers: Mapping[str, tuple[int, Any]]) -> None:
    """Survivors answer 200; the refused plugins' URLs answer a JSON error instead."""
    for name, url in scenario.survivors.items():
        assert tuple(answers[url]) == (200, {"plugin": name}), (url, answers[url])
    for url in scenario.bad_urls:
        status, body = answers[url]
        assert status != 200, (url, body)
        assert body is not None and body["status"] == status, (url, body)


def check_lenient_app(scenario: Scenario, app: Flask) -> None:
    """An app built leniently: /ready, the URLs, ``plugins --json``, and nothing of a
    refused blueprint left in it."""
    client = app.test_client()
    answers = {}
    for url in [*scenario.survivors.values(), *scenario.bad_urls]:
        response = client.get(url)
        answers[url] = (response.status_code, response.get_json(silent=True))
    check_answers(scenario, answers)
    ready = client.get("/ready")
    check_ready(scenario, ready.status_code, ready.get_json())
    result = app.test_cli_runner().invoke(args=["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    check_rows(scenario, rows)
    for name, dist in scenario.bad.items():
        assert rows[name]["version"] == dist.version, rows[name]
    owners = {rule.endpoint.partition(".")[0] for rule in app.url_map.iter_rules()}
    for name in scenario.bad:
        assert (name in owners) is scenario.late and (name in app.blueprints) is scenario.late
    if scenario.late:  # what it mounted answers 503 (the JSON "unavailable")
        mounted = [url for url in scenario.bad_urls if url.startswith("/api/")]
        assert mounted and {answers[url][0] for url in mounted} == {503}, answers
    assert "grabbed" not in owners  # a route a refused blueprint added to the app itself
    assert client.get("/no/such/page").is_json  # the host's 404 handler is intact


# -- pieces of the builders ---------------------------------------------------------


def _good(make: Make) -> tuple[FakeDist, dict[str, str]]:
    good = make("good", blueprint_source("good"), dist_name="core-app-good", version="1.0.0")
    return good, {"good": "/api/good/ping"}


def _hook(name: str, body: str) -> str:
    """Source of a plugin whose ``core_app_blueprint`` is ``body`` instead."""
    return blueprint_source(name, body=body, hook=False)


def _package(name: str) -> str:
    """A package name no earlier test of this process imported: ``@shared_task`` keeps
    every task it ever saw for every app, and the host tells a plugin's tasks by module."""
    return f"core_app_fake_{name}_{next(_packages)}"


def _grab_route(rule: str) -> str:
    """Module source whose blueprint adds ``rule`` to the app itself, outside the prefix."""
    return f"""
    def _grab(state):
        state.app.add_url_rule({rule!r}, "grabbed", lambda: {{"plugin": "grabbed"}})


    blueprint.record(_grab)
    """


def _one(make: Make, name: str, source: str, error: type[Exception], says: list[str], **kw: Any):
    """The common shape: one broken plugin ``name`` beside ``good``."""
    version = kw.pop("version", "1.0")
    bad_urls = kw.pop("bad_urls", [f"/api/{name}/ping"])
    settings = kw.pop("settings", {})
    late = kw.pop("late", False)
    bad = make(name, source, version=version, **kw)
    good, survivors = _good(make)
    return Scenario(
        {name: bad}, error, says, survivors, [bad, good], bad_urls, settings=settings, late=late
    )


def _newcomer(make: Make, alpha_prefix: str, beta_source: str, error, says, bad_urls=()):
    """Plugin alpha served before; beta, installed since, clashes with it and is refused."""
    alpha = make("alpha", blueprint_source("alpha", alpha_prefix), dist_name="core-app-alpha")
    beta = make("beta", beta_source, dist_name="core-app-beta", version="2.5.1")
    good, survivors = _good(make)
    return Scenario(
        {"beta": beta},
        error,
        says,
        {"alpha": f"{alpha_prefix}/ping", **survivors},
        [alpha, beta, good],
        list(bad_urls),
        served_before=["alpha", "good"],
    )


# -- loading: the distribution, the import, the hooks ----------------------------------


def two_distributions_one_name(make: Make) -> Scenario:
    one = make("twin", blueprint_source("twin"), dist_name="core-app-twin-a", version="1.0")
    two = make("twin", blueprint_source("twin"), dist_name="core-app-twin-b", version="2.0")
    good, survivors = _good(make)
    says = ["core-app-twin-a 1.0", "core-app-twin-b 2.0"]
    return Scenario(
        {"twin": one}, PluginConflictError, says, survivors, [one, two, good], ["/api/twin/ping"]
    )


def invalid_entry_point_name(make: Make) -> Scenario:
    source = blueprint_source("my_plugin")
    return _one(
        make, "my-plugin", source, PluginDeclarationError, ["identifier"], version="0.3",
        bad_urls=["/api/my_plugin/ping"],
    )  # fmt: skip


def host_version_excluded(make: Make) -> Scenario:
    return _one(
        make, "future", blueprint_source("future"), PluginVersionError,
        ["core-app>=99", f"core-app {host_version()}"], version="9.0", requires="core-app>=99",
    )  # fmt: skip


def entry_point_to_missing_module(make: Make) -> Scenario:
    return _one(
        make, "ghost", "", PluginImportError,
        ["no_such_module_for_core_app_tests", "points at nothing"], version="0.1",
        target="no_such_module_for_core_app_tests", bad_urls=[],
    )  # fmt: skip


def entry_point_to_missing_attribute(make: Make) -> Scenario:
    return _one(
        make, "hollow", blueprint_source("hollow"), PluginImportError,
        ["no_such_attribute", "points at nothing"], version="0.2",
        target="{module}:no_such_attribute",
    )  # fmt: skip


def module_raises_on_import(make: Make) -> Scenario:
    source = blueprint_source("explodes") + "\nraise RuntimeError('kaboom at import')\n"
    return _one(
        make, "explodes", source, PluginImportError, ["RuntimeError", "kaboom at import"],
        version="0.4",
    )  # fmt: skip


def very_slow_import(make: Make) -> Scenario:
    source = "import time\ntime.sleep(1.5)\n" + blueprint_source("sluggish")
    return _one(
        make, "sluggish", source, PluginImportError,
        ["over the budget of 0.5 s", "PLUGIN_IMPORT_BUDGET"], version="0.9",
        settings={"PLUGIN_IMPORT_BUDGET": 0.5},
    )  # fmt: skip


def task_module_fails_to_import(make: Make) -> Scenario:
    package = _package("taskfail")
    files = {
        f"{package}/__init__.py": blueprint_source("taskfail"),
        f"{package}/tasks.py": "raise ImportError('tasks need a missing library')\n",
    }
    return _one(
        make, "taskfail", "", PluginImportError,
        [f"'{package}.tasks'", "tasks need a missing library"],
        target=package, files=files, late=True,
    )  # fmt: skip


def hook_raises(make: Make) -> Scenario:
    body = """
    @hookimpl
    def core_app_blueprint(app):
        raise ValueError("no blueprint today")
    """
    return _one(
        make, "raiser", _hook("raiser", body), PluginHookError,
        ["core_app_blueprint", "ValueError", "no blueprint today"], version="0.5",
    )  # fmt: skip


def hook_returns_wrong_type(make: Make) -> Scenario:
    body = """
    @hookimpl
    def core_app_blueprint(app):
        return "/api/stringly"
    """
    source = _hook("stringly", body)
    return _one(make, "stringly", source, PluginDeclarationError, ["not a flask.Blueprint"])


def misspelt_hook(make: Make) -> Scenario:
    body = """
    @hookimpl
    def core_app_blueprints(app):
        return [blueprint]
    """
    return _one(
        make, "typo", blueprint_source("typo", body=body), PluginHookError,
        ["core_app_blueprints", "does not exist"], version="0.6",
    )  # fmt: skip


def wrong_hook_arguments(make: Make) -> Scenario:
    body = """
    @hookimpl
    def core_app_blueprint(app, request):
        return blueprint
    """
    return _one(make, "wrongargs", _hook("wrongargs", body), PluginHookError, ["request"])


def one_task_name_from_two_plugins(make: Make) -> Scenario:
    tasks = """
    from celery import shared_task


    @shared_task(name="dup_a.same")
    def same():
        return "same"
    """

    def plugin(name: str) -> FakeDist:
        package = _package(name)
        files = {
            f"{package}/__init__.py": blueprint_source(name),
            f"{package}/tasks.py": tasks,
        }
        return make(name, target=package, files=files)

    first, second = plugin("dup_a"), plugin("dup_b")
    good, survivors = _good(make)
    return Scenario(
        {"dup_b": second},
        PluginConflictError,
        ["'dup_a.same'"],
        {"dup_a": "/api/dup_a/ping", **survivors},
        [first, second, good],
        ["/api/dup_b/ping"],
        late=True,
    )


# -- dependencies ----------------------------------------------------------------------


def dependency_missing(make: Make) -> Scenario:
    source = blueprint_source("needy", body=needs_source({"nowhere_plugin": ""}))
    return _one(
        make, "needy", source, PluginDependencyError, ["'nowhere_plugin'", "not installed"],
        version="1.3",
    )  # fmt: skip


def dependency_disabled(make: Make) -> Scenario:
    bad = make("needs_good", blueprint_source("needs_good", body=needs_source({"good": ""})))
    bystander = make("bystander", blueprint_source("bystander"))
    good, _ = _good(make)
    return Scenario(
        {"needs_good": bad},
        PluginDependencyError,
        ["'good'", "disabled"],
        {"bystander": "/api/bystander/ping"},
        [bad, bystander, good],
        ["/api/needs_good/ping"],
        allowed=["needs_good", "bystander"],  # `good` is installed but not allowed
    )


def dependency_wrong_version(make: Make) -> Scenario:
    source = blueprint_source("picky", body=needs_source({"good": ">=5"}))
    return _one(
        make, "picky", source, PluginDependencyError, ["'good'>=5", "core-app-good 1.0.0"],
        version="1.5",
    )  # fmt: skip


def dependency_cycle(make: Make) -> Scenario:
    chicken = make(
        "chicken", blueprint_source("chicken", body=needs_source({"egg": ""})), version="2"
    )
    egg = make("egg", blueprint_source("egg", body=needs_source({"chicken": ""})), version="3")
    good, survivors = _good(make)
    return Scenario(
        {"chicken": chicken, "egg": egg},
        PluginDependencyError,
        ["cycle"],
        survivors,
        [chicken, egg, good],
        ["/api/chicken/ping", "/api/egg/ping"],
    )


# -- mounting: prefixes, rules, blueprints ----------------------------------------------


def prefix_same_as_another(make: Make) -> Scenario:
    return _newcomer(
        make, "/api/same", blueprint_source("beta", "/api/same"), PluginConflictError,
        ["/api/same", "'alpha'"],
    )  # fmt: skip


def prefix_same_as_another_neither_served_before(make: Make) -> Scenario:
    first = make("prefix_a", blueprint_source("prefix_a", "/api/shared"))
    second = make("prefix_b", blueprint_source("prefix_b", "/api/shared"))
    good, survivors = _good(make)
    return Scenario(
        {"prefix_a": first, "prefix_b": second},
        PluginConflictError,
        ["its prefix '/api/shared' overlaps '/api/shared' of plugin 'prefix_"],
        survivors,
        [first, second, good],
        ["/api/shared/ping"],
    )


def prefix_below_another(make: Make) -> Scenario:
    return _newcomer(
        make, "/api/a", blueprint_source("beta", "/api/a/b"), PluginConflictError,
        ["'/api/a/b'", "'/api/a'", "'alpha'"], ["/api/a/b/ping"],
    )  # fmt: skip


def prefix_above_another(make: Make) -> Scenario:
    return _newcomer(
        make, "/api/a/b", blueprint_source("beta", "/api/a"), PluginConflictError,
        ["'/api/a'", "'/api/a/b'", "'alpha'"], ["/api/a/ping"],
    )  # fmt: skip


def prefix_at_root(make: Make) -> Scenario:
    source = blueprint_source("beta", "/")
    return _newcomer(make, "/api/alpha", source, PluginConflictError, ["'/'", "host"], ["/ping"])


def _prefix_over_host_route(route: str) -> Callable[[Make], Scenario]:
    def builder(make: Make) -> Scenario:
        return _newcomer(
            make, "/api/alpha", blueprint_source("beta", route), PluginConflictError,
            [f"'{route}'", "host"], [f"{route}/ping"],
        )  # fmt: skip

    builder.__name__ = f"prefix_over_host_route_{route.strip('/')}"
    return builder


def prefix_with_a_variable(make: Make) -> Scenario:
    source = blueprint_source("beta", "/api/<tenant>")
    return _newcomer(make, "/api/alpha", source, PluginDeclarationError, ["variable"])


def blueprint_without_prefix(make: Make) -> Scenario:
    return _newcomer(
        make, "/api/alpha", blueprint_source("beta", ""), PluginDeclarationError,
        ["url_prefix", "PLUGIN_URL_PREFIXES"], ["/ping"],
    )  # fmt: skip


def rule_of_the_host(make: Make) -> Scenario:
    source = blueprint_source("beta", body=_grab_route("/health"))
    return _newcomer(
        make, "/api/alpha", source, PluginConflictError, ["GET /health", "host"],
        ["/api/beta/ping"],
    )  # fmt: skip


def rule_of_another_plugin(make: Make) -> Scenario:
    source = blueprint_source("beta", body=_grab_route("/api/alpha/ping"))
    return _newcomer(
        make, "/api/alpha", source, PluginConflictError, ["GET /api/alpha/ping", "'alpha'"],
        ["/api/beta/ping"],
    )  # fmt: skip


def route_outside_prefix(make: Make) -> Scenario:
    source = blueprint_source("beta", body=_grab_route("/outside"))
    return _newcomer(
        make, "/api/alpha", source, PluginConflictError, ["'/outside'", "outside its prefix"],
        ["/outside", "/api/beta/ping"],
    )  # fmt: skip


def route_added_when_ready(make: Make) -> Scenario:
    body = """
    @hookimpl
    def core_app_ready(app):
        app.add_url_rule("/sneaky", "sneaky", lambda: "sneaky")
    """
    return _one(
        make, "sneaky", blueprint_source("sneaky", body=body), PluginConflictError,
        ["'/sneaky'", "outside its prefix"], version="0.7",
        bad_urls=["/api/sneaky/ping", "/sneaky"], late=True,
    )  # fmt: skip


def blueprint_name_of_another_plugin(make: Make) -> Scenario:
    return _newcomer(
        make, "/api/alpha", blueprint_source("beta", blueprint="alpha"), PluginConflictError,
        ["'alpha'", "blueprint"], ["/api/beta/ping"],
    )  # fmt: skip


def one_blueprint_name_neither_served_before(make: Make) -> Scenario:
    first = make("bp_first", blueprint_source("bp_first", blueprint="shared"))
    second = make("bp_second", blueprint_source("bp_second", blueprint="shared"))
    good, survivors = _good(make)
    return Scenario(
        {"bp_first": first, "bp_second": second},
        PluginConflictError,
        ["blueprint", "'shared'", "plugin 'bp_"],
        survivors,
        [first, second, good],
        ["/api/bp_first/ping", "/api/bp_second/ping"],
    )


def app_errorhandler(make: Make) -> Scenario:
    body = """
    @blueprint.app_errorhandler(404)
    def not_found(error):
        return "<h1>nothing here</h1>", 404
    """
    source = blueprint_source("beta", body=body)
    return _newcomer(
        make, "/api/alpha", source, PluginConflictError, ["app_errorhandler", "404"],
        ["/api/beta/ping"],
    )  # fmt: skip


SCENARIOS: dict[str, Callable[[Make], Scenario]] = {
    builder.__name__: builder
    for builder in (
        two_distributions_one_name,
        invalid_entry_point_name,
        host_version_excluded,
        entry_point_to_missing_module,
        entry_point_to_missing_attribute,
        module_raises_on_import,
        very_slow_import,
        task_module_fails_to_import,
        hook_raises,
        hook_returns_wrong_type,
        misspelt_hook,
        wrong_hook_arguments,
        one_task_name_from_two_plugins,
        dependency_missing,
        dependency_disabled,
        dependency_wrong_version,
        dependency_cycle,
        prefix_same_as_another,
        prefix_same_as_another_neither_served_before,
        prefix_below_another,
        prefix_above_another,
        prefix_at_root,
        _prefix_over_host_route("/health"),
        _prefix_over_host_route("/ready"),
        _prefix_over_host_route("/plugins"),
        prefix_with_a_variable,
        blueprint_without_prefix,
        rule_of_the_host,
        rule_of_another_plugin,
        route_outside_prefix,
        route_added_when_ready,
        blueprint_name_of_another_plugin,
        one_blueprint_name_neither_served_before,
        app_errorhandler,
    )
}
