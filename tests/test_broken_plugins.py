"""Every kind of broken plugin, as an operator meets it: through ``python run.py``.

Each kind is a set of fake installed distributions (tests/fakes.py) put on PYTHONPATH
beside a healthy plugin, ``good``. For each kind, real subprocesses show that

- lenient (``CORE_APP_PLUGIN_ERRORS=skip``): ``run.py plugins --json`` lists the broken
  plugin as failed, with an error naming plugin, distribution, version and a fix, and
  the healthy one loaded; ``/ready`` answers 200 and lists it under ``plugins.failed``;
  the healthy plugin's route answers 200 and the broken plugin's routes do not;
- strict (``CORE_APP_PLUGIN_ERRORS=raise``): ``run.py plugins`` exits 1 and prints
  ``core_app refused to start.`` and one readable paragraph, never a traceback;
- the doctor (``python -m core_app.doctor --json``, run once over every kind together)
  reports it failed.

The subprocesses of every kind run concurrently, started once for the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakes import FakeDist, blueprint_source, make_plugin_dist

from core_app.discovery import host_version

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120
HEADER = "core_app refused to start."


@dataclass
class Kind:
    """One broken setup."""

    #: Plugins that must fail -> the distribution their error names.
    bad: dict[str, FakeDist]
    #: Texts every error of the kind contains (besides plugin, distribution, version).
    says: list[str]
    #: Other fake distributions of the setup (the other side of a conflict...).
    others: list[FakeDist] = field(default_factory=list)
    #: Plugins besides ``good`` that keep serving: name -> URL answering 200.
    survivors: dict[str, str] = field(default_factory=dict)
    #: URLs of the broken plugins' routes, which must not answer 200.
    bad_urls: list[str] = field(default_factory=list)
    #: Extra environment.
    env: dict[str, str] = field(default_factory=dict)

    @property
    def dists(self) -> list[FakeDist]:
        return [*self.bad.values(), *self.others]

    @property
    def plugins(self) -> list[str]:
        return sorted({"good", *(d.plugin for d in self.dists)})


def _needs(*names: str) -> str:
    deps = ", ".join(f'"{name}": ""' for name in names)
    return f"""
    @hookimpl
    def core_app_dependencies():
        return {{{deps}}}
    """


def _package(name: str, tasks: str) -> dict[str, str]:
    """Files of a plugin package ``core_app_fake_<name>``: a blueprint and ``tasks.py``."""
    return {
        f"core_app_fake_{name}/__init__.py": blueprint_source(name),
        f"core_app_fake_{name}/tasks.py": tasks,
    }


def _grab_route(rule: str) -> str:
    """Module source whose blueprint adds ``rule`` to the app itself, outside the prefix."""
    return f"""
    def _grab(state):
        state.app.add_url_rule({rule!r}, "grabbed", lambda: {{"plugin": "grabbed"}})


    blueprint.record(_grab)
    """


# -- the kinds -------------------------------------------------------------------------


def entry_point_to_missing_module(root: Path) -> Kind:
    bad = make_plugin_dist(root, "ghost", "", target="no_such_module_for_core_app", version="0.1")
    return Kind({"ghost": bad}, ["no_such_module_for_core_app", "points at nothing"])


def entry_point_to_missing_attribute(root: Path) -> Kind:
    source = blueprint_source("hollow")
    bad = make_plugin_dist(root, "hollow", source, target="{module}:no_such_attribute")
    return Kind(
        {"hollow": bad}, ["no_such_attribute", "points at nothing"], bad_urls=["/api/hollow/ping"]
    )


def module_raises_on_import(root: Path) -> Kind:
    source = blueprint_source("explodes") + "\nraise RuntimeError('kaboom at import')\n"
    bad = make_plugin_dist(root, "explodes", source, version="0.4")
    return Kind(
        {"explodes": bad}, ["RuntimeError", "kaboom at import"], bad_urls=["/api/explodes/ping"]
    )


def hook_raises(root: Path) -> Kind:
    body = """
    @hookimpl
    def core_app_blueprint(app):
        raise ValueError("no blueprint today")
    """
    bad = make_plugin_dist(root, "raiser", blueprint_source("raiser", body=body, hook=False))
    return Kind(
        {"raiser": bad},
        ["core_app_blueprint", "ValueError", "no blueprint today"],
        bad_urls=["/api/raiser/ping"],
    )


def hook_returns_wrong_type(root: Path) -> Kind:
    body = """
    @hookimpl
    def core_app_blueprint(app):
        return "/api/stringly"
    """
    bad = make_plugin_dist(root, "stringly", blueprint_source("stringly", body=body, hook=False))
    return Kind({"stringly": bad}, ["not a flask.Blueprint"], bad_urls=["/api/stringly/ping"])


def blueprint_without_prefix(root: Path) -> Kind:
    bad = make_plugin_dist(root, "noprefix", blueprint_source("noprefix", ""))
    return Kind({"noprefix": bad}, ["url_prefix", "PLUGIN_URL_PREFIXES"], bad_urls=["/ping"])


def prefix_at_root(root: Path) -> Kind:
    bad = make_plugin_dist(root, "rooted", blueprint_source("rooted", "/"))
    return Kind({"rooted": bad}, ["'/'", "host"], bad_urls=["/ping"])


def prefix_over_host_route(root: Path) -> Kind:
    bad = make_plugin_dist(root, "overhost", blueprint_source("overhost", "/health"))
    return Kind({"overhost": bad}, ["'/health'", "host route"], bad_urls=["/health/ping"])


def two_plugins_one_prefix(root: Path) -> Kind:
    first = make_plugin_dist(root, "prefix_a", blueprint_source("prefix_a", "/api/shared"))
    second = make_plugin_dist(root, "prefix_b", blueprint_source("prefix_b", "/api/shared"))
    # Neither served here before (no mounted.json), so neither takes the place.
    return Kind(
        {"prefix_a": first, "prefix_b": second},
        ["its prefix '/api/shared' overlaps '/api/shared' of plugin 'prefix_"],
        bad_urls=["/api/shared/ping"],
    )


def two_distributions_one_name(root: Path) -> Kind:
    source = blueprint_source("twin")
    one = make_plugin_dist(root, "twin", source, dist_name="core-app-twin-a", version="1.0")
    two = make_plugin_dist(root, "twin", source, dist_name="core-app-twin-b", version="2.0")
    return Kind(
        {"twin": one},
        ["core-app-twin-a 1.0", "core-app-twin-b 2.0"],
        others=[two],
        bad_urls=["/api/twin/ping"],
    )


def two_plugins_one_blueprint_name(root: Path) -> Kind:
    first = make_plugin_dist(root, "bp_first", blueprint_source("bp_first", blueprint="shared"))
    second = make_plugin_dist(root, "bp_second", blueprint_source("bp_second", blueprint="shared"))
    return Kind(
        {"bp_first": first, "bp_second": second},
        ["blueprint", "'shared'", "plugin 'bp_"],
        bad_urls=["/api/bp_first/ping", "/api/bp_second/ping"],
    )


def one_url_rule_from_two_plugins(root: Path) -> Kind:
    owner = make_plugin_dist(root, "rule_owner", blueprint_source("rule_owner"))
    source = blueprint_source("rule_taker", body=_grab_route("/api/rule_owner/ping"))
    taker = make_plugin_dist(root, "rule_taker", source)
    return Kind(
        {"rule_taker": taker},
        ["GET /api/rule_owner/ping", "plugin 'rule_owner'"],
        others=[owner],
        survivors={"rule_owner": "/api/rule_owner/ping"},
        bad_urls=["/api/rule_taker/ping"],
    )


def task_module_fails_to_import(root: Path) -> Kind:
    files = _package("taskfail", "raise ImportError('tasks need a missing library')\n")
    bad = make_plugin_dist(root, "taskfail", target="core_app_fake_taskfail", files=files)
    return Kind(
        {"taskfail": bad},
        ["'core_app_fake_taskfail.tasks'", "tasks need a missing library"],
        bad_urls=["/api/taskfail/ping"],
    )


def one_task_name_from_two_plugins(root: Path) -> Kind:
    tasks = """
    from celery import shared_task


    @shared_task(name="dup_a.same")
    def same():
        return "same"
    """
    first = make_plugin_dist(
        root, "dup_a", target="core_app_fake_dup_a", files=_package("dup_a", tasks)
    )
    second = make_plugin_dist(
        root, "dup_b", target="core_app_fake_dup_b", files=_package("dup_b", tasks)
    )
    return Kind(
        {"dup_b": second},
        ["'dup_a.same'"],
        others=[first],
        survivors={"dup_a": "/api/dup_a/ping"},
        bad_urls=["/api/dup_b/ping"],
    )


def host_version_excluded(root: Path) -> Kind:
    source = blueprint_source("future")
    bad = make_plugin_dist(root, "future", source, requires="core-app>=99", version="9.0")
    return Kind(
        {"future": bad},
        ["core-app>=99", f"core-app {host_version()}"],
        bad_urls=["/api/future/ping"],
    )


def misspelt_hook(root: Path) -> Kind:
    body = """
    @hookimpl
    def core_app_blueprints(app):
        return [blueprint]
    """
    bad = make_plugin_dist(root, "typo", blueprint_source("typo", body=body), version="0.6")
    return Kind(
        {"typo": bad}, ["core_app_blueprints", "does not exist"], bad_urls=["/api/typo/ping"]
    )


def dependency_cycle(root: Path) -> Kind:
    chicken = make_plugin_dist(root, "chicken", blueprint_source("chicken", body=_needs("egg")))
    egg = make_plugin_dist(root, "egg", blueprint_source("egg", body=_needs("chicken")))
    return Kind(
        {"chicken": chicken, "egg": egg},
        ["cycle"],
        bad_urls=["/api/chicken/ping", "/api/egg/ping"],
    )


def missing_dependency(root: Path) -> Kind:
    source = blueprint_source("needy", body=_needs("nowhere_plugin"))
    bad = make_plugin_dist(root, "needy", source, version="1.3")
    return Kind({"needy": bad}, ["'nowhere_plugin'", "not installed"], bad_urls=["/api/needy/ping"])


def very_slow_import(root: Path) -> Kind:
    source = "import time\ntime.sleep(1.5)\n" + blueprint_source("sluggish")
    bad = make_plugin_dist(root, "sluggish", source, version="0.9")
    return Kind(
        {"sluggish": bad},
        ["over the budget of 0.5 s", "PLUGIN_IMPORT_BUDGET"],
        bad_urls=["/api/sluggish/ping"],
        env={"CORE_APP_PLUGIN_IMPORT_BUDGET": "0.5"},
    )


KINDS: dict[str, Callable[[Path], Kind]] = {
    builder.__name__: builder
    for builder in (
        entry_point_to_missing_module,
        entry_point_to_missing_attribute,
        module_raises_on_import,
        hook_raises,
        hook_returns_wrong_type,
        blueprint_without_prefix,
        prefix_at_root,
        prefix_over_host_route,
        two_plugins_one_prefix,
        two_distributions_one_name,
        two_plugins_one_blueprint_name,
        one_url_rule_from_two_plugins,
        task_module_fails_to_import,
        one_task_name_from_two_plugins,
        host_version_excluded,
        misspelt_hook,
        dependency_cycle,
        missing_dependency,
        very_slow_import,
    )
}

#: Builds the app with ``run.py`` settings and asks it for /ready and some URLs.
PROBE = """
import json, sys
from run import app
client = app.test_client()
answers = {}
for url in ["/ready", *sys.argv[1:]]:
    response = client.get(url)
    answers[url] = [response.status_code, response.get_json(silent=True)]
print("PROBE " + json.dumps(answers))
"""


# -- running it all --------------------------------------------------------------------


def _env(instance: Path, paths: list[Path], plugins: list[str], **settings: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CORE_APP_", "FLASK_", "WERKZEUG_")) and key != "PYTHONPATH"
    }
    env.update(
        CORE_APP_INSTANCE_PATH=str(instance),
        CORE_APP_PLUGINS=",".join(plugins),
        PYTHONPATH=os.pathsep.join(str(path) for path in paths),
        **settings,
    )
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


@dataclass
class Runs:
    kind: Kind
    lenient_json: Future
    lenient_probe: Future
    strict: Future


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    """Every kind's fakes, and every subprocess started at once; yields the futures."""
    root = tmp_path_factory.mktemp("broken")
    good = make_plugin_dist(
        root / "site", "good", blueprint_source("good"), dist_name="core-app-good"
    )
    kinds = {name: builder(root / "site" / name) for name, builder in KINDS.items()}
    with ThreadPoolExecutor(max_workers=6) as pool:
        runs = {}
        for name, kind in kinds.items():
            paths = [good.path, *(d.path for d in kind.dists)]

            def env(mode: str, errors: str, kind=kind, paths=paths, name=name) -> dict:
                instance = root / "instances" / name / mode
                return _env(
                    instance, paths, kind.plugins, CORE_APP_PLUGIN_ERRORS=errors, **kind.env
                )

            urls = ["/api/good/ping", *kind.survivors.values(), *kind.bad_urls]
            runs[name] = Runs(
                kind,
                pool.submit(_run, ["run.py", "plugins", "--json"], env("json", "skip")),
                pool.submit(_run, ["-c", PROBE, *urls], env("probe", "skip")),
                pool.submit(_run, ["run.py", "routes"], env("strict", "raise")),
            )
        # The doctor over every kind at once: each plugin alone, then all together.
        everyone = sorted({"good", *(p for kind in kinds.values() for p in kind.plugins)})
        paths = [good.path, *(d.path for kind in kinds.values() for d in kind.dists)]
        doctor = pool.submit(
            _run,
            ["-m", "core_app.doctor", "--json"],
            _env(
                root / "instances" / "doctor",
                paths,
                everyone,
                CORE_APP_PLUGIN_IMPORT_BUDGET="0.5",
            ),
        )
        yield {"runs": runs, "doctor": doctor}


def _result(future: Future) -> subprocess.CompletedProcess[str]:
    return future.result(timeout=TIMEOUT * 3)


def _says_who(message: str, name: str, dist: FakeDist, says: list[str]) -> None:
    assert f"Plugin {name!r}" in message, message
    assert f"{dist.name} {dist.version}" in message, message
    assert "Fix:" in message and message.split("Fix:", 1)[1].strip(), message
    for text in says:
        assert text in message, (text, message)


def test_there_are_enough_kinds():
    assert len(KINDS) >= 15


@pytest.mark.parametrize("kind_name", list(KINDS))
def test_lenient_lists_it_failed_and_serves_the_rest(everything, kind_name):
    runs: Runs = everything["runs"][kind_name]
    kind = runs.kind
    result = _result(runs.lenient_json)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for name, dist in kind.bad.items():
        row = rows[name]
        assert row["status"] == "failed", row
        assert row["distribution"] == dist.name and row["version"] == dist.version, row
        _says_who(row["error"], name, dist, kind.says)
    for name in ["good", *kind.survivors]:
        assert rows[name]["status"] == "loaded", rows[name]
    assert rows["good"]["url_prefix"] == "/api/good" and rows["good"]["routes"] == 1


@pytest.mark.parametrize("kind_name", list(KINDS))
def test_lenient_ready_reports_it_and_the_healthy_plugin_answers(everything, kind_name):
    runs: Runs = everything["runs"][kind_name]
    kind = runs.kind
    result = _result(runs.lenient_probe)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    answers = json.loads(line.removeprefix("PROBE "))

    status, ready = answers["/ready"]
    assert status == 200, ready
    failed = {entry["name"]: entry["error"] for entry in ready["plugins"]["failed"]}
    assert set(kind.bad) <= set(failed), failed
    for name, dist in kind.bad.items():
        _says_who(failed[name], name, dist, kind.says)
    assert not set(kind.bad) & set(ready["plugins"]["loaded"])
    assert {"good", *kind.survivors} <= set(ready["plugins"]["loaded"])

    assert answers["/api/good/ping"] == [200, {"plugin": "good"}]
    for name, url in kind.survivors.items():
        assert answers[url] == [200, {"plugin": name}], (url, answers[url])
    for url in kind.bad_urls:
        status, body = answers[url]
        assert status != 200, (url, body)
        assert body is not None and body["status"] == status, (url, body)  # JSON errors


@pytest.mark.parametrize("kind_name", list(KINDS))
def test_strict_refuses_with_one_readable_paragraph(everything, kind_name):
    runs: Runs = everything["runs"][kind_name]
    kind = runs.kind
    result = _result(runs.strict)
    assert result.returncode != 0, result.stdout
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr
    assert HEADER in stderr, stderr
    paragraph = stderr.split(HEADER, 1)[1].strip()
    assert paragraph, stderr
    assert "\n\n" not in paragraph, f"more than one paragraph:\n{stderr}"
    assert len(paragraph.splitlines()) == 1, f"not one line:\n{stderr}"
    # The paragraph is about one of the broken plugins (which one, for two, is the
    # first in load order).
    name = next((name for name in kind.bad if paragraph.startswith(f"Plugin {name!r}")), None)
    assert name is not None, paragraph
    _says_who(paragraph, name, kind.bad[name], kind.says)
    # Before the header there may be warnings (Celery warns of a duplicate task name
    # itself), but no other plugin error.
    assert "Plugin '" not in stderr.split(HEADER, 1)[0], stderr
    assert result.stdout == "", result.stdout  # no table of a half-built app


def _doctor_reports(everything) -> dict[str, dict]:
    result = _result(everything["doctor"])
    assert result.returncode == 1, result.stdout + result.stderr
    return {report["name"]: report for report in json.loads(result.stdout)}


@pytest.mark.parametrize("kind_name", list(KINDS))
def test_doctor_reports_it_failed(everything, kind_name):
    kind = everything["runs"][kind_name].kind
    reports = _doctor_reports(everything)
    for name, dist in kind.bad.items():
        report = reports[name]
        assert report["status"] == "failed", report
        assert report["distribution"] == dist.name, report
        assert f"Plugin {name!r}" in report["error"] and "Fix:" in report["error"], report
        assert report["error_detail"]["plugin"] == name, report


def test_doctor_passes_the_healthy_plugins(everything):
    reports = _doctor_reports(everything)
    healthy = {"good", *(n for runs in everything["runs"].values() for n in runs.kind.survivors)}
    for name in healthy:
        assert reports[name]["status"] == "loaded", reports[name]
