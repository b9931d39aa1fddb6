"""The command line: ``run.py plugins`` (table and JSON), and refused starts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from fakes import blueprint_source, config

from core_app import create_app
from core_app.doctor import format_report, inspect_plugins
from core_app.testing import clean_env, run_command

ROOT = Path(__file__).resolve().parents[1]
JSON_KEYS = {"name", "distribution", "version", "url_prefix", "routes", "status", "error"}
TABLE_COLUMNS = ("name", "distribution", "version", "prefix", "routes", "status")


@pytest.fixture
def mixed_app(fake_dist, tmp_path):
    """Two healthy plugins, one broken one (lenient), one disabled one."""
    body = """
    @blueprint.get("/second")
    def second():
        return {}
    """
    fake_dist("fine", blueprint_source("fine", body=body), dist_name="core-app-fine", version="1.2")
    fake_dist("also_fine", blueprint_source("also_fine", "/v2/also"), version="0.9")
    fake_dist("broken", blueprint_source("broken", "/"), dist_name="core-app-broken", version="6.6")
    fake_dist("unused", blueprint_source("unused"), dist_name="core-app-unused")
    return create_app(config(tmp_path, ["fine", "also_fine", "broken"], PLUGIN_ERRORS="skip"))


def _json_rows(app):
    result = app.test_cli_runner().invoke(args=["plugins", "--json"])
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_plugins_json_describes_every_plugin(mixed_app):
    rows = _json_rows(mixed_app)
    host = mixed_app.extensions["core_app"]
    assert set(rows) == {record.name for record in host.plugins()}
    assert {"fine", "also_fine", "broken", "unused"} <= set(rows)
    assert "core_app" not in rows  # the host's built-in plugin is not listed
    for name, row in rows.items():
        assert set(row) >= JSON_KEYS, row
        record = host.records[name]
        assert row["distribution"] == record.distribution
        assert row["version"] == record.version
        assert row["routes"] == len(row["endpoints"])
        assert row["url_prefix"] == record.url_prefix
        assert row["status"] == record.status

    assert rows["fine"]["status"] == "loaded" and rows["fine"]["error"] is None
    assert rows["fine"]["url_prefix"] == "/api/fine"
    assert rows["fine"]["routes"] == 2
    assert rows["also_fine"]["url_prefix"] == "/v2/also"
    assert rows["broken"]["status"] == "failed"
    assert (
        "'broken'" in rows["broken"]["error"] and "core-app-broken 6.6" in rows["broken"]["error"]
    )
    assert rows["unused"]["status"] == "disabled" and rows["unused"]["error"] is None


def test_plugins_table_lists_name_distribution_version_prefix_routes_status(mixed_app):
    result = mixed_app.test_cli_runner().invoke(args=["plugins"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = lines[0]
    positions = [header.find(column) for column in TABLE_COLUMNS]
    assert -1 not in positions, header
    assert positions == sorted(positions), header
    rows = _json_rows(mixed_app)
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert set(by_name) == set(rows)
    for name, row in rows.items():
        line = by_name[name]
        assert row["distribution"] in line
        assert row["version"] in line
        if row["url_prefix"]:
            assert row["url_prefix"] in line
        assert f" {row['routes']} " in line
        assert row["status"] in line
    assert rows["broken"]["error"] in by_name["broken"]
    assert "excluded" in by_name["unused"]


def test_routes_count_endpoints_times_methods_and_beat_entries_are_listed(fake_dist, tmp_path):
    body = """
    from celery.schedules import crontab

    @blueprint.route("/items", methods=["GET", "POST", "PUT"])
    def items():
        return {}

    @hookimpl
    def core_app_beat_schedule():
        return {
            "nightly": {"task": "multi.cleanup", "schedule": crontab(0, 3)},
            "often": {"task": "multi.poll", "schedule": 30.0},
        }
    """
    fake_dist("multi", blueprint_source("multi", body=body))
    app = create_app(config(tmp_path, ["multi"]))
    row = _json_rows(app)["multi"]
    # GET /ping, and GET, POST, PUT on /items: four endpoints x methods from two rules.
    assert row["endpoints"] == [
        "GET /api/multi/items",
        "POST /api/multi/items",
        "PUT /api/multi/items",
        "GET /api/multi/ping",
    ]
    assert row["routes"] == 4
    assert row["beat"] == [
        {"name": "multi.nightly", "task": "multi.cleanup", "schedule": "crontab 0 3 * * *"},
        {"name": "multi.often", "task": "multi.poll", "schedule": "every 30 s"},
    ]
    assert app.test_client().get("/plugins").get_json()[0]["routes"] == 4  # the same count

    table = app.test_cli_runner().invoke(args=["plugins"]).stdout.splitlines()
    assert "beat" in table[0].split()
    assert " 4 " in table[1]
    assert "multi.nightly (crontab 0 3 * * *), multi.often (every 30 s)" in table[1]

    # The doctor's report (python run.py plugins check) shows both as well.
    report = format_report(inspect_plugins(["multi"]))
    assert "routes: 4 under /api/multi (endpoints x methods)" in report, report
    assert (
        "beat: multi.nightly -> multi.cleanup (crontab 0 3 * * *), "
        "multi.often -> multi.poll (every 30 s)"
    ) in report, report


def test_run_py_plugins_json_lists_the_example_plugins(tmp_path):
    result = run_command(
        [sys.executable, "run.py", "plugins", "--json"],
        clean_env(CORE_APP_INSTANCE_PATH=str(tmp_path)),
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["shop"]["status"] == "loaded"
    assert rows["shop"]["url_prefix"] == "/api/shop"
    assert rows["shop"]["distribution"] == "core-app-shop"
    assert rows["notifications"]["status"] == "loaded"
    assert rows["notifications"]["url_prefix"] == "/api/notifications"
    assert rows["notifications"]["distribution"] == "core-app-notifications"
    assert all(row["routes"] > 0 for row in rows.values())
    assert (tmp_path / "celery").is_dir()  # the instance folder is the one we chose


def test_flask_cli_finds_the_same_command(tmp_path):
    env = clean_env(CORE_APP_INSTANCE_PATH=str(tmp_path), CORE_APP_PLUGINS="shop")
    result = run_command(
        [sys.executable, "-m", "flask", "--app", "run", "plugins", "--json"], env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["shop"]["status"] == "loaded"
    assert rows["notifications"]["status"] == "disabled"


def test_refused_start_in_production_prints_the_reason_not_a_traceback(tmp_path):
    result = run_command(
        [sys.executable, "run.py", "plugins"],
        clean_env(CORE_APP_INSTANCE_PATH=str(tmp_path), CORE_APP_ENV="production"),
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


def test_refused_start_for_a_broken_plugin_prints_the_plugin_error(fake_dist, tmp_path):
    broken = fake_dist("broken", blueprint_source("broken", "/health"), version="4.5.6")
    env = clean_env(
        CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"),
        CORE_APP_PLUGIN_ERRORS="raise",
        CORE_APP_PLUGINS="broken",
        PYTHONPATH=os.pathsep.join([str(broken.path), os.environ.get("PYTHONPATH", "")]),
    )
    result = run_command([sys.executable, "run.py", "routes"], env, cwd=ROOT)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("core_app refused to start.\n\n")
    assert "'broken'" in result.stderr
    assert f"{broken.name} {broken.version}" in result.stderr
    assert "Fix:" in result.stderr


def test_lenient_start_reports_the_broken_plugin_and_serves_the_rest(fake_dist, tmp_path):
    broken = fake_dist("broken", blueprint_source("broken", "/health"), version="4.5.6")
    env = clean_env(
        CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"),
        CORE_APP_PLUGIN_ERRORS="skip",
        CORE_APP_PLUGINS="broken,shop",
        PYTHONPATH=os.pathsep.join([str(broken.path), os.environ.get("PYTHONPATH", "")]),
    )
    result = run_command([sys.executable, "run.py", "plugins", "--json"], env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["broken"]["status"] == "failed"
    assert f"{broken.name} {broken.version}" in rows["broken"]["error"]
    assert rows["shop"]["status"] == "loaded"
