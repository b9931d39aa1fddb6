"""The doctor: ``python run.py plugins check`` and ``python -m core_app.doctor``.

Each plugin is built alone in a process of its own, then all together; the report names
what each plugin brings (import time, hooks, routes, tasks, config, host compatibility)
and every problem, with the plugin and its cause. Everything here runs as real
subprocesses, the way an operator runs the doctor before a deployment.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fakes import blueprint_source, make_plugin_dist, subprocess_env

from core_app.discovery import host_version
from core_app.testing import run_command

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 180

#: What the example plugins bring: name -> (prefix, routes, queue, tasks, config keys, hooks).
EXAMPLES = {
    "shop": {
        "distribution": "core-app-shop",
        "url_prefix": "/api/shop",
        "routes": 5,
        "queue": "shop",
        "tasks": ["shop.daily_sales_summary"],
        "config_keys": ["SHOP_RECEIPTS_THROUGH_OUTBOX"],
        "hooks": [
            "core_app_beat_schedule",
            "core_app_blueprint",
            "core_app_config_defaults",
            "core_app_models",
        ],
    },
    "notifications": {
        "distribution": "core-app-notifications",
        "url_prefix": "/api/notifications",
        "routes": 2,
        "queue": "notifications",
        "tasks": ["notifications.send_email"],
        "config_keys": ["NOTIFICATIONS_SMTP_URL", "NOTIFICATIONS_MAX_RETRIES"],
        "hooks": ["core_app_blueprint", "core_app_config_defaults"],
    },
}

REPORT_KEYS = {
    "name",
    "distribution",
    "version",
    "status",
    "error",
    "import_ms",
    "hooks",
    "url_prefix",
    "routes",
    "tasks",
    "queue",
    "config_keys",
    "requires_core_app",
    "compatible",
}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_command([sys.executable, *args], env, cwd=REPO, timeout=TIMEOUT)


def _blocks(report: str) -> dict[str, str]:
    """The text report split into one block per plugin, by plugin name."""
    blocks = {}
    for block in report.split("\n\n"):
        match = re.match(r"(\w+) \(", block)
        if match:
            blocks[match.group(1)] = block
    return blocks


# -- the example plugins ---------------------------------------------------------------


def test_check_over_the_example_plugins_passes_and_describes_each(tmp_path):
    result = _run(
        ["run.py", "plugins", "check"],
        subprocess_env(tmp_path, CORE_APP_PLUGINS="shop,notifications"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert f"core-app {host_version()}" in out
    assert "0 with problems" in out
    blocks = _blocks(out)
    for name, expected in EXAMPLES.items():
        block = blocks[name]
        assert block.startswith(f"{name} ({expected['distribution']} 1.0.0): OK"), block
        assert re.search(r"import: \d+(\.\d+)? ms", block), block
        for hook in expected["hooks"]:
            assert hook in block, (hook, block)
        assert f"routes: {expected['routes']} under {expected['url_prefix']}" in block, block
        assert f"tasks on queue {expected['queue']}: " in block, block
        for task in expected["tasks"]:
            assert task in block, (task, block)
        for key in expected["config_keys"]:
            assert key in block, (key, block)
        assert "requires core-app" in block and ": compatible" in block, block
        assert ">=1.0" in block and "<2" in block, block


def test_check_json_over_the_example_plugins(tmp_path):
    result = _run(
        ["run.py", "plugins", "check", "--json"],
        subprocess_env(tmp_path, CORE_APP_PLUGINS="shop,notifications"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reports = {report["name"]: report for report in json.loads(result.stdout)}
    for name, expected in EXAMPLES.items():
        report = reports[name]
        assert set(report) >= REPORT_KEYS, sorted(report)
        assert report["status"] == "loaded" and report["error"] is None, report
        assert report["distribution"] == expected["distribution"]
        assert isinstance(report["import_ms"], (int, float)) and report["import_ms"] >= 0
        assert set(expected["hooks"]) <= set(report["hooks"]), report["hooks"]
        assert report["url_prefix"] == expected["url_prefix"]
        assert report["routes"] == expected["routes"]
        assert report["queue"] == expected["queue"]
        assert set(expected["tasks"]) <= set(report["tasks"])
        assert set(expected["config_keys"]) <= set(report["config_keys"])
        assert report["compatible"] is True
        assert ">=1.0" in report["requires_core_app"]


# -- broken plugins --------------------------------------------------------------------


@pytest.fixture
def broken(tmp_path):
    """Fake installed plugins beside a healthy one: each broken in its own way.

    ``left`` and ``right`` are each fine alone; together their prefixes overlap.
    """
    root = tmp_path / "site"
    dists = {
        "good": make_plugin_dist(root, "good", blueprint_source("good"), dist_name="core-app-good"),
        "explodes": make_plugin_dist(
            root,
            "explodes",
            blueprint_source("explodes") + "\nraise RuntimeError('kaboom at import')\n",
            version="0.4",
        ),
        "future": make_plugin_dist(
            root, "future", blueprint_source("future"), requires="core-app>=99", version="9.0"
        ),
        "left": make_plugin_dist(root, "left", blueprint_source("left", "/api/side")),
        "right": make_plugin_dist(root, "right", blueprint_source("right", "/api/side/right")),
        "typo": make_plugin_dist(
            root,
            "typo",
            blueprint_source(
                "typo",
                body="""
                @hookimpl
                def core_app_blueprints(app):
                    return [blueprint]
                """,
            ),
        ),
    }
    return dists


#: Each broken plugin, and what its report must say about the cause.
CAUSES = {
    "explodes": ["RuntimeError", "kaboom at import"],
    "future": ["core-app>=99", f"core-app {host_version()}"],
    # Neither served before, so neither takes /api/side (tests/test_mounting.py).
    "left": ["overlaps", "'/api/side/right'", "'right'"],
    "right": ["overlaps", "'/api/side'", "'left'"],
    "typo": ["core_app_blueprints", "does not exist"],
}


def _all_plugins(dists):
    return ",".join(dists)


def test_check_names_every_broken_plugin_and_its_cause(tmp_path, broken):
    env = subprocess_env(
        tmp_path, [d.path for d in broken.values()], CORE_APP_PLUGINS=_all_plugins(broken)
    )
    result = _run(["run.py", "plugins", "check"], env)
    assert result.returncode != 0, result.stdout
    blocks = _blocks(result.stdout)
    for name, says in CAUSES.items():
        block = blocks[name]
        dist = broken[name]
        assert block.startswith(f"{name} ({dist.name} {dist.version}): FAILED"), block
        assert f"Plugin {name!r}" in block and "Fix:" in block, block
        for text in says:
            assert text in block, (text, block)
    assert ": OK" in blocks["good"].splitlines()[0], blocks["good"]
    assert f"{len(CAUSES)} with problems" in result.stdout


def test_check_json_marks_every_broken_plugin_failed(tmp_path, broken):
    env = subprocess_env(
        tmp_path, [d.path for d in broken.values()], CORE_APP_PLUGINS=_all_plugins(broken)
    )
    result = _run(["run.py", "plugins", "check", "--json"], env)
    assert result.returncode != 0, result.stdout
    reports = {report["name"]: report for report in json.loads(result.stdout)}
    for name, says in CAUSES.items():
        report = reports[name]
        assert report["status"] == "failed", report
        assert report["error_detail"]["plugin"] == name
        assert report["error_detail"]["distribution"] == broken[name].name
        for text in says:
            assert text in report["error"], (text, report["error"])
    assert reports["future"]["compatible"] is False
    assert reports["right"]["error_detail"]["kind"] == "conflict"
    assert reports["good"]["status"] == "loaded"
    assert reports["good"]["routes"] == 1 and reports["good"]["url_prefix"] == "/api/good"


def test_overlapping_prefixes_are_only_a_problem_together(tmp_path, broken):
    """Alone, each of the two plugins is fine: the doctor finds the conflict in the
    all-together build, and names each side in the other's error."""
    runs = {
        "left": [broken["left"].path],
        "right": [broken["right"].path],
        "left,right": [broken["left"].path, broken["right"].path],
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            plugins: pool.submit(
                _run,
                ["-m", "core_app.doctor", "--json"],
                subprocess_env(tmp_path / plugins, paths, CORE_APP_PLUGINS=plugins),
            )
            for plugins, paths in runs.items()
        }
    results = {plugins: future.result() for plugins, future in futures.items()}
    for alone in ("left", "right"):
        result = results[alone]
        reports = {report["name"]: report for report in json.loads(result.stdout)}
        assert reports[alone]["status"] == "loaded", reports[alone]
        assert result.returncode == 0, result.stdout + result.stderr
    result = results["left,right"]
    assert result.returncode == 1, result.stdout + result.stderr
    reports = {report["name"]: report for report in json.loads(result.stdout)}
    assert reports["left"]["status"] == reports["right"]["status"] == "failed"
    assert "'left'" in reports["right"]["error"] and "'right'" in reports["left"]["error"]


def test_a_plugin_with_a_dependency_passes_when_its_dependency_is_installed(tmp_path):
    """Alone, a plugin's dependency is left out by construction: that is no problem as
    long as the all-together build loads it."""
    root = tmp_path / "site"
    base = make_plugin_dist(root, "base", blueprint_source("base"), version="1.2")
    body = """
    @hookimpl
    def core_app_dependencies():
        return {"base": ">=1.0"}
    """
    dependent = make_plugin_dist(root, "dependent", blueprint_source("dependent", body=body))
    paths = [base.path, dependent.path]
    result = _run(
        ["-m", "core_app.doctor", "--json"],
        subprocess_env(tmp_path, paths, CORE_APP_PLUGINS="base,dependent"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reports = {report["name"]: report for report in json.loads(result.stdout)}
    assert reports["dependent"]["status"] == "loaded", reports["dependent"]
    assert "core_app_dependencies" in reports["dependent"]["hooks"]
    assert reports["dependent"]["dependencies"] == {"base": ">=1.0"}

    # Not enabled beside it, the dependency is missing: that is a problem.
    result = _run(
        ["-m", "core_app.doctor", "--json"],
        subprocess_env(tmp_path, paths, CORE_APP_PLUGINS="dependent"),
    )
    assert result.returncode == 1, result.stdout
    reports = {report["name"]: report for report in json.loads(result.stdout)}
    assert reports["dependent"]["status"] == "failed"
    assert "'base'" in reports["dependent"]["error"]


def test_module_doctor_works_when_the_app_refuses_to_start(tmp_path, broken):
    """With a broken plugin in strict mode the app refuses to start, yet ``run.py
    plugins check`` and ``python -m core_app.doctor`` both report every plugin."""
    paths = [broken["good"].path, broken["explodes"].path]
    env = subprocess_env(
        tmp_path, paths, CORE_APP_PLUGINS="good,explodes", CORE_APP_PLUGIN_ERRORS="raise"
    )
    refused = _run(["run.py", "routes"], env)
    assert refused.returncode == 1
    assert "core_app refused to start." in refused.stderr

    via_run_py = _run(["run.py", "plugins", "check"], env)
    assert via_run_py.returncode == 1, via_run_py.stdout + via_run_py.stderr
    assert "kaboom at import" in _blocks(via_run_py.stdout)["explodes"]

    result = _run(["-m", "core_app.doctor"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    blocks = _blocks(result.stdout)
    assert "FAILED" in blocks["explodes"] and "kaboom at import" in blocks["explodes"]
    assert ": OK" in blocks["good"] and "routes: 1 under /api/good" in blocks["good"]

    as_json = _run(["-m", "core_app.doctor", "--json"], env)
    assert as_json.returncode == 1
    reports = {report["name"]: report for report in json.loads(as_json.stdout)}
    assert reports["explodes"]["status"] == "failed"
    assert reports["good"]["status"] == "loaded"
