"""Hook tracing (``CORE_APP_TRACE_HOOKS``) and plugin dependencies (load order, versions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import blueprint_source, config, make_plugin_dist, subprocess_env

from core_app import PluginDependencyError, create_app

REPO = Path(__file__).resolve().parents[1]

#: One traced hook call: hook name, plugin name, arguments, duration.
TRACE = re.compile(r"^hook (core_app_\w+) plugin=(\w+) args=(\{.*\}) took (\d+\.\d+) ms$")

NEEDS_BASE = """
@hookimpl
def core_app_dependencies():
    return {"base": ">=1.0"}
"""


def _ready_writer(log: Path) -> str:
    """Module source whose ``core_app_ready`` appends the plugin's name to ``log``."""
    return f"""
@hookimpl
def core_app_ready(app):
    with open({str(log)!r}, "a") as out:
        out.write(__name__ + "\\n")
"""


def _run_plugins(tmp_path: Path, paths=(), **settings: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(tmp_path, paths, **settings)
    result = subprocess.run(
        [sys.executable, "run.py", "plugins"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


def _traces(stderr: str) -> list[tuple[str, str, str, float]]:
    found = []
    for line in stderr.splitlines():
        match = TRACE.match(line.strip())
        if match:
            hook, plugin, args, ms = match.groups()
            found.append((hook, plugin, args, float(ms)))
    return found


# -- tracing ---------------------------------------------------------------------------


def test_trace_hooks_logs_every_hook_call_with_plugin_args_and_duration(tmp_path):
    result = _run_plugins(tmp_path, CORE_APP_PLUGINS="shop,notifications", CORE_APP_TRACE_HOOKS="1")
    traces = _traces(result.stderr)
    assert traces, result.stderr
    calls = {(hook, plugin) for hook, plugin, _, _ in traces}
    expected = {
        ("core_app_config_defaults", "shop"),
        ("core_app_blueprint", "shop"),
        ("core_app_beat_schedule", "shop"),
        ("core_app_models", "shop"),
        ("core_app_config_defaults", "notifications"),
        ("core_app_blueprint", "notifications"),
        ("core_app_blueprint", "core_app"),  # the host's built-in plugin is traced too
    }
    assert expected <= calls, sorted(calls)
    for hook, _plugin, args, ms in traces:
        assert ms >= 0
        if hook == "core_app_blueprint":
            assert args.startswith("{'app': <CoreApp"), args
        if hook in ("core_app_config_defaults", "core_app_beat_schedule"):
            assert args == "{}", args
    # Each implementation is called once: one line per call, no duplicates.
    assert len(traces) == len({(hook, plugin) for hook, plugin, _, _ in traces})
    assert result.stdout.splitlines()[0].startswith("name")  # the command still works


@pytest.mark.parametrize("setting", [None, "0", "false"])
def test_no_trace_lines_without_trace_hooks(tmp_path, setting):
    settings = {"CORE_APP_PLUGINS": "shop,notifications"}
    if setting is not None:
        settings["CORE_APP_TRACE_HOOKS"] = setting
    result = _run_plugins(tmp_path, **settings)
    assert _traces(result.stderr) == []
    assert "hook core_app_" not in result.stderr, result.stderr


def test_traces_follow_load_order_and_show_every_hook(tmp_path):
    """Dependencies, ready notifications and their arguments appear in the trace too."""
    root = tmp_path / "site"
    base = make_plugin_dist(root, "base", blueprint_source("base"), version="1.2")
    source = blueprint_source("a_dependent", body=NEEDS_BASE + _ready_writer(tmp_path / "r"))
    dependent = make_plugin_dist(root, "a_dependent", source)
    result = _run_plugins(
        tmp_path,
        [base.path, dependent.path],
        CORE_APP_PLUGINS="base,a_dependent",
        CORE_APP_TRACE_HOOKS="true",
    )
    traces = _traces(result.stderr)
    calls = [(hook, plugin) for hook, plugin, _, _ in traces]
    assert ("core_app_dependencies", "a_dependent") in calls
    assert ("core_app_ready", "a_dependent") in calls
    ready_args = next(a for h, p, a, _ in traces if (h, p) == ("core_app_ready", "a_dependent"))
    assert "'app'" in ready_args
    mounted = [plugin for hook, plugin in calls if hook == "core_app_blueprint"]
    assert mounted.index("base") < mounted.index("a_dependent"), mounted


# -- dependencies ----------------------------------------------------------------------


def test_a_plugin_loads_after_the_plugin_it_depends_on(fake_dist, tmp_path):
    log = tmp_path / "ready.log"
    base = fake_dist("base", blueprint_source("base", body=_ready_writer(log)), version="1.2")
    dependent = fake_dist(
        "a_dependent", blueprint_source("a_dependent", body=NEEDS_BASE + _ready_writer(log))
    )
    loner = fake_dist("c_loner", blueprint_source("c_loner", body=_ready_writer(log)))
    app = create_app(config(tmp_path, ["a_dependent", "base", "c_loner"], PLUGIN_ERRORS="raise"))
    host = app.extensions["core_app"]
    order = [record.name for record in host.active(builtins=False)]
    # "a_dependent" sorts first by name, yet loads after "base".
    assert sorted(order) == ["a_dependent", "base", "c_loner"]
    assert order.index("base") < order.index("a_dependent"), order
    assert order == ["base", "c_loner", "a_dependent"], order  # then by name, batch by batch
    assert host.records["a_dependent"].dependencies == {"base": ">=1.0"}
    # Mounting and the ready notification follow the same order.
    assert [name for name in app.blueprints if name in order] == order
    modules = {base.module: "base", dependent.module: "a_dependent", loner.module: "c_loner"}
    assert [modules[line] for line in log.read_text().split()] == order
    client = app.test_client()
    for name in order:
        assert client.get(f"/api/{name}/ping").get_json() == {"plugin": name}


def test_without_dependencies_plugins_load_by_name(fake_dist, tmp_path):
    fake_dist("base", blueprint_source("base"), version="1.2")
    fake_dist("a_dependent", blueprint_source("a_dependent"))
    app = create_app(config(tmp_path, ["base", "a_dependent"], PLUGIN_ERRORS="raise"))
    order = [record.name for record in app.extensions["core_app"].active(builtins=False)]
    assert order == ["a_dependent", "base"]


def test_a_dependency_of_the_wrong_version_is_an_error_naming_both(fake_dist, tmp_path):
    base = fake_dist("base", blueprint_source("base"), dist_name="core-app-base", version="0.5")
    dependent = fake_dist(
        "a_dependent",
        blueprint_source("a_dependent", body=NEEDS_BASE),
        dist_name="core-app-dependent",
        version="3.1",
    )
    with pytest.raises(PluginDependencyError) as info:
        create_app(config(tmp_path / "strict", ["base", "a_dependent"], PLUGIN_ERRORS="raise"))
    error = info.value
    assert error.plugin == "a_dependent" and error.other == "base"
    message = str(error)
    assert f"Plugin 'a_dependent' (distribution {dependent.name} {dependent.version})" in message
    assert "'base'>=1.0" in message, message
    assert f"{base.name} {base.version}" in message, message
    assert "Fix:" in message

    app = create_app(config(tmp_path / "lenient", ["base", "a_dependent"], PLUGIN_ERRORS="skip"))
    statuses = {r.name: r.status for r in app.extensions["core_app"].plugins()}
    assert statuses["a_dependent"] == "failed" and statuses["base"] == "loaded"
    client = app.test_client()
    assert client.get("/api/base/ping").status_code == 200
    assert client.get("/api/a_dependent/ping").status_code == 404
