"""Every kind of broken plugin (tests/broken_plugins.py), run two ways.

In-process: ``create_app`` over fake installed distributions. Strict
(``PLUGIN_ERRORS=raise``) raises the scenario's ``PluginError`` subclass naming plugin,
distribution, version and a fix; lenient (``skip``) serves the rest, lists the refused
plugins as failed in ``plugins --json`` and ``/ready``, and keeps nothing of them.

As an operator meets them, through real ``python run.py`` processes with the fakes on
PYTHONPATH: strict, ``run.py routes`` exits 1 with ``core_app refused to start.`` and one
readable paragraph, never a traceback; lenient, the app ``run.py`` builds answers /ready
with them failed while the healthy plugins serve; ``run.py plugins check --json`` (the
doctor), once over most scenarios together, reports them failed. The subprocesses of
every scenario start at once.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from broken_plugins import (
    SCENARIOS,
    Scenario,
    check_answers,
    check_lenient_app,
    check_message,
    check_ready,
    check_rows,
)
from fakes import FakeDist, config, make_plugin_dist
from procs import REPO

from core_app import PluginError, create_app
from core_app.testing import clean_env, run_command

HEADER = "core_app refused to start."

# -- in-process -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_in_process_strict_refuses_it_by_name_distribution_version_and_fix(
    fake_dist, tmp_path, name
):
    scenario = SCENARIOS[name](fake_dist)
    strict = config(tmp_path, scenario.plugins, PLUGIN_ERRORS="raise", **scenario.settings)
    with pytest.raises(PluginError) as info:
        create_app(strict)
    error = info.value
    assert type(error) is scenario.error, f"{type(error).__name__}: {error}"
    assert error.plugin in scenario.bad, str(error)
    check_message(str(error), error.plugin, scenario.bad[error.plugin], scenario.says)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_in_process_lenient_reports_it_and_serves_the_rest(fake_dist, tmp_path, name):
    scenario = SCENARIOS[name](fake_dist)
    if scenario.served_before:
        create_app(config(tmp_path, scenario.served_before, PLUGIN_ERRORS="skip"))
    lenient = config(tmp_path, scenario.plugins, PLUGIN_ERRORS="skip", **scenario.settings)
    check_lenient_app(scenario, create_app(lenient))


# -- through python run.py --------------------------------------------------------------

#: Builds the app as ``gunicorn run:app`` would and asks it for /ready and some URLs.
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


@dataclass
class Setup:
    """One scenario written to disk, and how to run ``python`` on it."""

    scenario: Scenario
    folder: Path

    def run(self, args: list[str], mode: str, errors: str, plugins: list[str] | None = None):
        env = clean_env(
            [dist.path for dist in self.scenario.dists],
            CORE_APP_INSTANCE_PATH=str(self.folder / mode),
            CORE_APP_PLUGINS=",".join(plugins or self.scenario.plugins),
            CORE_APP_PLUGIN_ERRORS=errors,
            **{f"CORE_APP_{key}": value for key, value in self.scenario.settings.items()},
        )
        return run_command([sys.executable, *args], env, cwd=REPO, timeout=240)

    def strict(self):
        return self.run(["run.py", "routes"], "strict", "raise")

    def lenient(self):
        """The probe, after the plugins that served before served (same instance)."""
        if self.scenario.served_before:
            served = self.scenario.served_before
            before = self.run(["-c", "from run import app"], "lenient", "skip", served)
            assert before.returncode == 0, before.stderr
        urls = [*self.scenario.survivors.values(), *self.scenario.bad_urls]
        return self.run(["-c", PROBE, *urls], "lenient", "skip")


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


@pytest.fixture(scope="module")
def setups(tmp_path_factory) -> dict[str, Setup]:
    """Every scenario on disk; all share one ``good`` (so that the doctor can check many
    scenarios at once)."""
    root = tmp_path_factory.mktemp("broken")
    good: list[FakeDist] = []

    def make(folder: Path, name: str, *args, **kwargs) -> FakeDist:
        if name != "good":
            return make_plugin_dist(folder, name, *args, **kwargs)
        if not good:
            good.append(make_plugin_dist(root / "good", name, *args, **kwargs))
        return good[0]

    return {
        name: Setup(builder(functools.partial(make, root / name / "site")), root / name)
        for name, builder in SCENARIOS.items()
    }


@pytest.fixture(scope="module")
def runs(setups, pool) -> dict[str, dict[str, Future]]:
    """Every scenario's strict and lenient processes, started at once."""
    return {
        name: {"strict": pool.submit(setup.strict), "lenient": pool.submit(setup.lenient)}
        for name, setup in setups.items()
    }


#: Scenarios the doctor checks in one run over all their plugins at once: those that need
#: no previous start, allow every plugin, and share no plugin name but ``good``.
DOCTOR = [
    "two_distributions_one_name",
    "invalid_entry_point_name",
    "host_version_excluded",
    "entry_point_to_missing_module",
    "entry_point_to_missing_attribute",
    "module_raises_on_import",
    "very_slow_import",
    "task_module_fails_to_import",
    "hook_raises",
    "hook_returns_wrong_type",
    "misspelt_hook",
    "wrong_hook_arguments",
    "one_task_name_from_two_plugins",
    "dependency_missing",
    "dependency_wrong_version",
    "dependency_cycle",
    "prefix_same_as_another_neither_served_before",
    "route_added_when_ready",
    "one_blueprint_name_neither_served_before",
]


@pytest.fixture(scope="module")
def doctor(setups, pool, tmp_path_factory) -> Future:
    """``run.py plugins check --json`` (each plugin alone, then all together) over the
    plugins of every DOCTOR scenario."""
    scenarios = [setups[name].scenario for name in DOCTOR]
    dists = list({dist.path: dist for s in scenarios for dist in s.dists}.values())
    owner: dict[str, str] = {}
    for name in DOCTOR:
        for plugin in {dist.plugin for dist in setups[name].scenario.dists} - {"good"}:
            assert owner.setdefault(plugin, name) == name, f"{plugin}: {owner[plugin]}, {name}"
    env = clean_env(
        [dist.path for dist in dists],
        CORE_APP_INSTANCE_PATH=str(tmp_path_factory.mktemp("doctor")),
        CORE_APP_PLUGINS=",".join(sorted({"good", *owner})),
        CORE_APP_PLUGIN_IMPORT_BUDGET=0.5,
    )
    command = [sys.executable, "run.py", "plugins", "check", "--json"]
    return pool.submit(run_command, command, env, cwd=REPO, timeout=600)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_run_py_strict_refuses_with_one_readable_paragraph(setups, runs, name):
    scenario = setups[name].scenario
    result = runs[name]["strict"].result()
    assert result.returncode == 1, result.stdout + result.stderr
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr
    assert HEADER in stderr, stderr
    before, _, paragraph = stderr.partition(HEADER)
    paragraph = paragraph.strip()
    assert paragraph and "\n\n" not in paragraph, f"not one paragraph:\n{stderr}"
    # About one of the refused plugins (which one, for two, is the first in load order).
    who = next((bad for bad in scenario.bad if paragraph.startswith(f"Plugin {bad!r}")), None)
    assert who is not None, paragraph
    check_message(paragraph, who, scenario.bad[who], scenario.says)
    # Warnings may come first (Celery warns of a duplicate task name), no plugin error.
    assert "Plugin '" not in before, stderr
    assert result.stdout == "", result.stdout  # no table of a half-built app


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_run_py_lenient_ready_reports_it_and_the_healthy_plugins_serve(setups, runs, name):
    scenario = setups[name].scenario
    result = runs[name]["lenient"].result()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("PROBE ")]
    answers = json.loads(line.removeprefix("PROBE "))
    check_ready(scenario, *answers.pop("/ready"))
    check_answers(scenario, answers)


@pytest.mark.parametrize("name", DOCTOR)
def test_run_py_plugins_check_reports_it_failed(setups, doctor, name):
    scenario = setups[name].scenario
    result = doctor.result()
    assert result.returncode == 1, result.stdout + result.stderr
    reports = {report["name"]: report for report in json.loads(result.stdout)}
    check_rows(scenario, reports)
    for bad in scenario.bad:
        assert reports[bad]["error_detail"]["plugin"] == bad, reports[bad]
