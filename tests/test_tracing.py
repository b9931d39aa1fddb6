"""Hook tracing (``CORE_APP_TRACE_HOOKS``): every hook call, with plugin, arguments and time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import (
    blueprint_source,
    make_plugin_dist,
    needs_source,
    ready_recorder_source,
    subprocess_env,
)

from core_app.testing import run_command

REPO = Path(__file__).resolve().parents[1]

#: One traced hook call: hook name, plugin name, arguments, duration.
TRACE = re.compile(r"^hook (core_app_\w+) plugin=(\w+) args=(\{.*\}) took (\d+\.\d+) ms$")


def _run_plugins(tmp_path: Path, paths=(), **settings: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(tmp_path, paths, **settings)
    result = run_command([sys.executable, "run.py", "plugins"], env, cwd=REPO)
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
    body = needs_source({"base": ">=1.0"}) + ready_recorder_source("a_dependent")
    source = blueprint_source("a_dependent", body=body)
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
