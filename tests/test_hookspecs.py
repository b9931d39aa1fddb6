"""The hook reference: documented, tested, and each hook doing what its spec says."""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import sys
from pathlib import Path

import pluggy
import pytest
from conftest import HOOK_EFFECTS
from fakes import blueprint_source, config, ready_recorder_source

from core_app import (
    PluginConflictError,
    PluginDeclarationError,
    PluginHookError,
    PluginImportError,
    create_app,
    hookspecs,
)

TESTS = Path(__file__).resolve().parent
_unique = itertools.count(1)


def _hookspec_names():
    return sorted(
        name
        for name, value in vars(hookspecs).items()
        if callable(value) and hasattr(value, "core_app_spec")
    )


def test_there_are_hookspecs_and_all_start_with_core_app():
    names = _hookspec_names()
    assert all(name.startswith("core_app_") for name in names)
    manager = pluggy.PluginManager("core_app")
    manager.add_hookspecs(hookspecs)
    assert {name for name in vars(manager.hook) if name.startswith("core_app_")} == set(names)


@pytest.mark.parametrize("name", _hookspec_names())
def test_every_hookspec_has_a_docstring(name):
    doc = inspect.getdoc(getattr(hookspecs, name))
    assert doc, f"hookspec {name} has no docstring"
    assert len(doc.split()) >= 10, f"hookspec {name}'s docstring says too little: {doc!r}"
    assert "Called" in doc, f"hookspec {name}'s docstring does not say when it is called"


def test_every_hookspec_has_a_test_of_its_effect():
    """HOOK_EFFECTS (conftest.py) names, for each hookspec, the test asserting what its
    implementation does; that test fails unless the hook was really called in it."""
    assert sorted(HOOK_EFFECTS) == _hookspec_names()
    for path, function in HOOK_EFFECTS.values():
        tree = ast.parse((TESTS / path).read_text())
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert function in defined, (path, function)


# -- each hook -------------------------------------------------------------------------


def test_core_app_blueprint_returning_none_mounts_nothing(fake_dist, tmp_path):
    body = """
    @hookimpl
    def core_app_blueprint(app):
        return None
    """
    fake_dist("headless", blueprint_source("headless", body=body, hook=False))
    app = create_app(config(tmp_path, ["headless"], PLUGIN_ERRORS="raise"))
    record = app.extensions["core_app"].records["headless"]
    assert record.status == "loaded"
    assert record.routes == [] and record.url_prefix is None
    assert app.test_client().get("/api/headless/ping").status_code == 404


def test_core_app_blueprint_receives_the_configured_app(fake_dist, tmp_path):
    body = """
    @hookimpl
    def core_app_blueprint(app):
        blueprint.url_prefix = app.config["CONFIGURED_PREFIX_VALUE"]
        return blueprint
    """
    fake_dist("configured", blueprint_source("configured", body=body, hook=False))
    app = create_app(
        config(
            tmp_path, ["configured"], PLUGIN_ERRORS="raise", CONFIGURED_PREFIX_VALUE="/from/config"
        )
    )
    assert app.test_client().get("/from/config/ping").get_json() == {"plugin": "configured"}


def _task_plugin(fake_dist, *, declare=True, task_source=None):
    """A plugin whose task module defines `<plugin>.ping`; returns (plugin, module names)."""
    n = next(_unique)
    plugin = f"worky{n}"
    module = f"worky_plugin_{n}"
    tasks_module = f"{module}_jobs"
    task_source = (
        task_source
        or f"""
    from celery import shared_task


    @shared_task(name="{plugin}.ping")
    def ping():
        return "pong"
    """
    )
    hook = f"""
    @hookimpl
    def core_app_task_modules():
        return ["{tasks_module}"]
    """
    fake_dist(
        plugin,
        blueprint_source(plugin, body=hook if declare else ""),
        module=module,
        files={f"{tasks_module}.py": task_source},
    )
    return plugin, tasks_module


def test_core_app_task_modules_are_listed_in_the_record(fake_dist, tmp_path):
    plugin, tasks_module = _task_plugin(fake_dist)
    app = create_app(config(tmp_path, [plugin], PLUGIN_ERRORS="raise"))
    record = app.extensions["core_app"].records[plugin]
    assert record.task_modules == [tasks_module]
    assert record.tasks == [f"{plugin}.ping"]
    assert record.queue == plugin
    assert tasks_module in sys.modules
    celery_app = app.extensions["celery"]
    assert f"{plugin}.ping" in celery_app.tasks
    router = app.extensions["core_app.router"]
    assert router(f"{plugin}.ping", (), {}, {}) == {"queue": plugin}
    rows = json.loads(app.test_cli_runner().invoke(args=["plugins", "--json"]).stdout)
    row = next(row for row in rows if row["name"] == plugin)
    assert row["task_modules"] == [tasks_module]


def test_core_app_task_modules_queue_can_be_overridden(fake_dist, tmp_path):
    plugin, _ = _task_plugin(fake_dist)
    app = create_app(
        config(tmp_path, [plugin], PLUGIN_ERRORS="raise", PLUGIN_QUEUES={plugin: "elsewhere"})
    )
    assert app.extensions["core_app"].records[plugin].queue == "elsewhere"
    assert app.extensions["core_app.router"](f"{plugin}.ping", (), {}, {}) == {"queue": "elsewhere"}


def test_core_app_task_modules_default_to_the_package_tasks_module(fake_dist, tmp_path):
    n = next(_unique)
    package = f"pkg_plugin_{n}"
    fake_dist(
        "packaged",
        target=package,
        files={
            f"{package}/__init__.py": blueprint_source("packaged"),
            f"{package}/tasks.py": f"""
            from celery import shared_task


            @shared_task(name="packaged.job_{n}")
            def job():
                return 1
            """,
        },
    )
    app = create_app(config(tmp_path, ["packaged"], PLUGIN_ERRORS="raise"))
    record = app.extensions["core_app"].records["packaged"]
    assert record.task_modules == [f"{package}.tasks"]
    assert record.tasks == [f"packaged.job_{n}"]


def test_core_app_task_modules_no_default_for_a_top_level_module(fake_dist, tmp_path):
    """A single-module plugin has no package, so a top-level ``tasks`` is not its own."""
    n = next(_unique)
    stray = f"""
    from celery import shared_task


    @shared_task(name="stray.job_{n}")
    def job():
        return 1
    """
    fake_dist("loner", blueprint_source("loner"), files={"tasks.py": stray})
    app = create_app(config(tmp_path, ["loner"], PLUGIN_ERRORS="raise"))
    record = app.extensions["core_app"].records["loner"]
    assert record.status == "loaded"
    assert record.task_modules == []
    assert record.tasks == []
    assert "tasks" not in sys.modules


def test_core_app_task_modules_invalid_return_is_refused(fake_dist, tmp_path):
    body = """
    @hookimpl
    def core_app_task_modules():
        return "just.one.string"
    """
    fake_dist("stringtasks", blueprint_source("stringtasks", body=body))
    with pytest.raises(PluginDeclarationError, match="core_app_task_modules"):
        create_app(config(tmp_path, ["stringtasks"], PLUGIN_ERRORS="raise"))


def test_core_app_task_modules_that_fail_to_import_are_refused(fake_dist, tmp_path):
    plugin, tasks_module = _task_plugin(fake_dist, task_source="raise ImportError('no celery')")
    with pytest.raises(PluginImportError, match=tasks_module):
        create_app(config(tmp_path, [plugin], PLUGIN_ERRORS="raise"))
    app = create_app(config(tmp_path / "lenient", [plugin], PLUGIN_ERRORS="skip"))
    assert app.extensions["core_app"].records[plugin].status == "failed"


def test_core_app_beat_schedule_names_are_prefixed(fake_dist, tmp_path):
    body = """
    @hookimpl
    def core_app_beat_schedule():
        return {
            "tick": {"task": "beaty.tick", "schedule": 30.0},
            "tock": {"task": "beaty.tock", "schedule": 60.0, "args": (1,)},
        }
    """
    fake_dist("beaty", blueprint_source("beaty", body=body))
    app = create_app(config(tmp_path, ["beaty"], PLUGIN_ERRORS="raise"))
    schedule = app.extensions["celery"].conf.beat_schedule
    assert schedule["beaty.tick"] == {"task": "beaty.tick", "schedule": 30.0}
    assert schedule["beaty.tock"]["args"] == (1,)
    assert "tick" not in schedule and "tock" not in schedule
    assert Path(app.extensions["celery"].conf.beat_schedule_filename).parent == Path(
        app.instance_path
    )


def test_core_app_beat_schedule_of_the_shop(tmp_path):
    import core_app_shop

    declared = core_app_shop.core_app_beat_schedule()
    app = create_app(config(tmp_path, ["shop"], PLUGIN_ERRORS="raise"))
    schedule = app.extensions["celery"].conf.beat_schedule
    assert set(schedule) == {f"shop.{name}" for name in declared}
    for name, entry in declared.items():
        assert schedule[f"shop.{name}"]["task"] == entry["task"]


def test_core_app_beat_schedule_without_schedule_is_refused(fake_dist, tmp_path):
    body = """
    @hookimpl
    def core_app_beat_schedule():
        return {"tick": {"task": "nobeat.tick"}}
    """
    fake_dist("nobeat", blueprint_source("nobeat", body=body))
    with pytest.raises(PluginDeclarationError, match="core_app_beat_schedule"):
        create_app(config(tmp_path, ["nobeat"], PLUGIN_ERRORS="raise"))


def test_core_app_health_checks_failing_check_makes_ready_503(fake_dist, tmp_path):
    body = """
    from flask import current_app


    def disk():
        if current_app.config["CHECKY_BROKEN"]:
            raise OSError("disk is full")


    @hookimpl
    def core_app_health_checks():
        return {"disk": disk}
    """
    fake_dist("checky", blueprint_source("checky", body=body))
    app = create_app(config(tmp_path, ["checky"], PLUGIN_ERRORS="raise", CHECKY_BROKEN=False))
    client = app.test_client()
    healthy = client.get("/ready")
    assert healthy.status_code == 200
    assert healthy.get_json()["checks"]["checky.disk"] == {"ok": True}

    app.config["CHECKY_BROKEN"] = True  # the checks run on every request
    broken = client.get("/ready")
    assert broken.status_code == 503
    body = broken.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["checky.disk"]["ok"] is False
    assert "disk is full" in body["checks"]["checky.disk"]["error"]
    assert body["checks"]["broker"] == {"ok": True}
    assert client.get("/health").status_code == 200  # liveness is not readiness
    assert client.get("/api/checky/ping").status_code == 200


def test_core_app_health_checks_must_be_callable(fake_dist, tmp_path):
    body = """
    @hookimpl
    def core_app_health_checks():
        return {"disk": "not callable"}
    """
    fake_dist("badcheck", blueprint_source("badcheck", body=body))
    with pytest.raises(PluginDeclarationError, match="core_app_health_checks"):
        create_app(config(tmp_path, ["badcheck"], PLUGIN_ERRORS="raise"))


def test_core_app_health_checks_of_a_skipped_plugin_do_not_run(fake_dist, tmp_path):
    body = """
    def always_fails():
        raise OSError("never healthy")


    @hookimpl
    def core_app_health_checks():
        return {"never": always_fails}
    """
    fake_dist("failing_checks", blueprint_source("failing_checks", "/", body=body))
    app = create_app(config(tmp_path, ["failing_checks"], PLUGIN_ERRORS="skip"))
    response = app.test_client().get("/ready")
    assert response.status_code == 200
    assert "failing_checks.never" not in response.get_json()["checks"]


def _cli_source(name):
    return f"""
    import click


    @click.command("hello")
    @click.option("--who", default="world")
    def hello(who):
        click.echo(f"hello {{who}} from {name}")


    @hookimpl
    def core_app_cli_commands():
        return [hello]
    """


def test_core_app_cli_commands_are_grouped_under_the_plugin(fake_dist, tmp_path):
    fake_dist("talker", blueprint_source("talker", body=_cli_source("talker")))
    app = create_app(config(tmp_path, ["talker"], PLUGIN_ERRORS="raise"))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["talker", "hello", "--who", "tests"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "hello tests from talker"
    assert "hello" in runner.invoke(args=["talker", "--help"]).stdout
    assert runner.invoke(args=["hello"]).exit_code != 0  # not a top-level command


def test_core_app_cli_commands_cannot_replace_a_host_command(fake_dist, tmp_path):
    source = blueprint_source("plugins", "/api/plugins-plugin", body=_cli_source("plugins"))
    fake_dist("plugins", source)
    with pytest.raises(PluginConflictError, match="command"):
        create_app(config(tmp_path, ["plugins"], PLUGIN_ERRORS="raise"))
    app = create_app(config(tmp_path / "lenient", ["plugins"], PLUGIN_ERRORS="skip"))
    result = app.test_cli_runner().invoke(args=["plugins", "--json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["plugins"]["status"] == "failed"


def test_core_app_ready_is_called_once_with_the_finished_app(fake_dist, tmp_path):
    body = """
    CALLS = []


    @hookimpl
    def core_app_ready(app):
        CALLS.append((app, sorted(r.rule for r in app.url_map.iter_rules()), app.sealed))
    """
    fake_dist("ready_hook", blueprint_source("ready_hook", body=body))
    fake_dist("other_one", blueprint_source("other_one"))
    app = create_app(config(tmp_path, ["ready_hook", "other_one"], PLUGIN_ERRORS="raise"))
    module = sys.modules[app.extensions["core_app"].records["ready_hook"].source.target]
    assert len(module.CALLS) == 1
    called_with, rules, sealed = module.CALLS[0]
    assert called_with is app
    assert "/api/ready_hook/ping" in rules and "/api/other_one/ping" in rules
    assert sealed is True


# -- how hooks are called ----------------------------------------------------------------


@pytest.mark.parametrize(
    "option", ["wrapper", "hookwrapper", "tryfirst", "trylast", "optionalhook"]
)
def test_core_app_ready_with_an_option_the_host_cannot_honour_is_refused(
    fake_dist, tmp_path, option
):
    """A wrapper core_app_ready used to be called as a plain function: it returned a
    generator and its body never ran. Every such option is now refused by name."""
    body = f"""
    @hookimpl({option}=True)
    def core_app_ready(app):
        yield
    """
    dist = fake_dist("optioned", blueprint_source("optioned", body=body), version="2.1.0")
    with pytest.raises(PluginHookError) as caught:
        create_app(config(tmp_path, ["optioned"], PLUGIN_ERRORS="raise"))
    message = str(caught.value)
    assert "'optioned'" in message and f"{dist.name} 2.1.0" in message
    assert f"core_app_ready with {option}=True" in message

    app = create_app(config(tmp_path, ["optioned", "shop"], PLUGIN_ERRORS="skip"))
    records = app.extensions["core_app"].records
    assert records["optioned"].failed and records["shop"].active
    assert "/api/optioned/ping" not in {r.rule for r in app.url_map.iter_rules()}


def test_core_app_blueprint_implemented_twice_in_one_plugin_is_refused(fake_dist, tmp_path):
    """With specname, a second implementation used to replace the first silently."""
    body = """
    from flask import Blueprint as _Blueprint

    @hookimpl(specname="core_app_blueprint")
    def another_blueprint(app):
        return _Blueprint("twice_other", __name__, url_prefix="/api/twice_other")
    """
    fake_dist("twice", blueprint_source("twice", body=body))
    with pytest.raises(PluginHookError) as caught:
        create_app(config(tmp_path, ["twice"], PLUGIN_ERRORS="raise"))
    message = str(caught.value)
    assert "core_app_blueprint is implemented 2 times" in message
    assert "another_blueprint" in message and "core_app_blueprint" in message


def test_implemented_hooks_come_from_pluggy(fake_dist, tmp_path):
    fake_dist("hooked", blueprint_source("hooked", body=ready_recorder_source("hooked")))
    app = create_app(config(tmp_path, ["hooked"], PLUGIN_ERRORS="raise"))
    host = app.extensions["core_app"]
    assert host.implemented_hooks("hooked") == ["core_app_blueprint", "core_app_ready"]
    plugin = host.pm.get_plugin("hooked")
    assert sorted(c.name for c in host.pm.get_hookcallers(plugin)) == host.implemented_hooks(
        "hooked"
    )


def test_no_hookspec_claims_firstresult_since_each_plugin_is_called_alone():
    for name in _hookspec_names():
        opts = getattr(hookspecs, name).core_app_spec
        assert not opts.get("firstresult"), name
    reference = (TESTS.parent / "docs" / "hooks.md").read_text()
    assert "first non-None" not in reference
    assert "for each plugin on its own" in reference
