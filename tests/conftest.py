"""Shared fixtures of the host's tests; fake distributions live in tests/fakes.py.

``app``, ``client`` and ``runner`` are the Flask tutorial's names for the shipped
``core_app_app``, ``core_app_client`` and ``core_app_runner`` (core_app.testing): this
suite runs without pytest-flask, so the short names are free here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from core_app.discovery import rescan
from core_app.plugins import PluginHost

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # --import-mode=importlib: make `import fakes` work
    sys.path.append(str(HERE))

from fakes import FakeDist, make_plugin_dist  # noqa: E402


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeDist]]:
    """Make fake installed plugin distributions (see fakes.make_plugin_dist).

    Each lands in a folder of its own on sys.path; the entry-point scan is forgotten so
    the next create_app sees it. Afterwards the fake modules leave sys.modules and the
    scan is forgotten again, so no other test sees them.
    """
    root = tmp_path / "site-packages"

    def make(name: str, module_source: str = "", **kwargs: Any) -> FakeDist:
        dist = make_plugin_dist(root, name, module_source, **kwargs)
        monkeypatch.syspath_prepend(str(dist.path))
        rescan()
        return dist

    yield make
    for module_name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None) or ""
        if filename.startswith(str(root)):
            del sys.modules[module_name]
    rescan()


@pytest.fixture
def app(core_app_app: Flask) -> Flask:
    return core_app_app


@pytest.fixture
def client(core_app_client: FlaskClient) -> FlaskClient:
    return core_app_client


@pytest.fixture
def runner(core_app_runner: FlaskCliRunner) -> FlaskCliRunner:
    return core_app_runner


#: Each hookspec -> the test that asserts what an implementation of it does. The test of
#: a hook fails unless that hook of a plugin was really called during it (the recorder
#: below); test_hookspecs.py checks that every hookspec has one.
HOOK_EFFECTS = {
    "core_app_dependencies": (
        "test_dependencies.py",
        "test_a_plugin_loads_after_the_plugin_it_depends_on",
    ),
    "core_app_config_defaults": (
        "test_config.py",
        "test_core_app_config_defaults_of_a_fake_plugin",
    ),
    "core_app_models": ("test_db.py", "test_core_app_models_lenient_mode_keeps_the_rightful_owner"),
    "core_app_migrations": (
        "test_migrations.py",
        "test_core_app_migrations_folder_named_by_the_hook",
    ),
    "core_app_blueprint": (
        "test_hookspecs.py",
        "test_core_app_blueprint_receives_the_configured_app",
    ),
    "core_app_task_modules": (
        "test_hookspecs.py",
        "test_core_app_task_modules_are_listed_in_the_record",
    ),
    "core_app_task_options": (
        "test_task_options.py",
        "test_core_app_task_options_for_all_tasks_then_each_task",
    ),
    "core_app_beat_schedule": (
        "test_hookspecs.py",
        "test_core_app_beat_schedule_names_are_prefixed",
    ),
    "core_app_health_checks": (
        "test_hookspecs.py",
        "test_core_app_health_checks_failing_check_makes_ready_503",
    ),
    "core_app_cli_commands": (
        "test_hookspecs.py",
        "test_core_app_cli_commands_are_grouped_under_the_plugin",
    ),
    "core_app_ready": (
        "test_hookspecs.py",
        "test_core_app_ready_is_called_once_with_the_finished_app",
    ),
}
_HOOK_OF_TEST = {test: hook for hook, test in HOOK_EFFECTS.items()}


@pytest.fixture(autouse=True)
def _hook_effect_test_calls_its_hook(request: pytest.FixtureRequest, monkeypatch) -> Iterator[None]:
    """In the test of a hook (HOOK_EFFECTS), record the hooks the host calls on plugins
    (not its built-in one); afterwards, the test's hook must be among them."""
    test = (request.path.name, request.function.__name__)
    hook = _HOOK_OF_TEST.get(test)
    if hook is None:
        yield
        return
    called: set[str] = set()
    call = PluginHost.call

    def recording_call(self: PluginHost, record: Any, hook_name: str, **kwargs: Any) -> Any:
        if not record.builtin and hook_name in self.implemented_hooks(record.name):
            called.add(hook_name)
        return call(self, record, hook_name, **kwargs)

    monkeypatch.setattr(PluginHost, "call", recording_call)
    yield
    assert hook in called, f"{test[1]} is the test of {hook}, yet no plugin's {hook} was called"
