"""Which plugin owns a task: a plugin that fails after its tasks were registered loses
them, and a task's name must lead every process (even one that does not load the plugin)
to the plugin that owns it."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest
from fakes import blueprint_source, config, subprocess_env
from procs import REPO, clean_env

from core_app import (
    PluginConflictError,
    PluginDeclarationError,
    TaskUnavailable,
    create_app,
    send_task,
)

_unique = itertools.count(1)


def test_a_plugin_failing_in_core_app_ready_loses_its_tasks(fake_dist, tmp_path):
    n = next(_unique)
    package = f"late_failure_{n}"
    fake_dist(
        "late",
        target=package,
        files={
            f"{package}/__init__.py": blueprint_source(
                "late",
                body="""
                @hookimpl
                def core_app_ready(app):
                    raise RuntimeError("not ready")
                """,
            ),
            f"{package}/tasks.py": f"""
            from celery import shared_task


            @shared_task(name="late.job_{n}")
            def job():
                return 1
            """,
        },
    )
    fake_dist("fine", blueprint_source("fine"))
    app = create_app(config(tmp_path, ["late", "fine"], PLUGIN_ERRORS="skip"))
    record = app.extensions["core_app"].records["late"]
    assert record.failed and "not ready" in record.error.message
    assert f"late.job_{n}" not in app.extensions["celery"].tasks
    with app.app_context(), pytest.raises(TaskUnavailable):
        send_task(f"late.job_{n}")
    assert app.test_client().get("/api/late/ping").status_code == 503
    assert app.test_client().get("/api/fine/ping").status_code == 200


# -- a task's name must lead every process to its plugin ---------------------------------


def _tasks_plugin(fake_dist, plugin: str, task_name: str | None):
    """A plugin package whose tasks module defines one task named ``task_name`` (None:
    Celery's default name, ``<package>.tasks.job``); returns (package, dist)."""
    package = f"named_pkg_{next(_unique)}"
    decorator = "@shared_task" if task_name is None else f"@shared_task(name={task_name!r})"
    dist = fake_dist(
        plugin,
        target=package,
        files={
            f"{package}/__init__.py": blueprint_source(plugin),
            f"{package}/tasks.py": f"""
            from celery import shared_task


            {decorator}
            def job():
                return 1
            """,
        },
    )
    return package, dist


def test_a_task_whose_name_leads_to_no_plugin_is_refused(fake_dist, tmp_path):
    name = f"misc.job_{next(_unique)}"
    _tasks_plugin(fake_dist, "oddly", name)
    with pytest.raises(PluginDeclarationError) as refused:
        create_app(config(tmp_path, ["oddly"], PLUGIN_ERRORS="raise"))
    assert refused.value.plugin == "oddly"
    assert repr(name) in refused.value.cause and "oddly.<task>" in refused.value.fix
    app = create_app(config(tmp_path / "lenient", ["oddly", "shop"], PLUGIN_ERRORS="skip"))
    assert app.extensions["core_app"].records["oddly"].failed
    assert name not in app.extensions["celery"].tasks


def test_a_task_named_like_another_plugins_tasks_is_a_conflict(fake_dist, tmp_path):
    name = f"shop.copy_{next(_unique)}"
    _tasks_plugin(fake_dist, "copycat", name)
    for plugins in (["copycat", "shop"], ["copycat"]):  # shop installed, even if not enabled
        with pytest.raises(PluginConflictError) as refused:
            create_app(config(tmp_path / str(len(plugins)), plugins, PLUGIN_ERRORS="raise"))
        assert refused.value.plugin == "copycat" and refused.value.other == "plugin 'shop'"
        assert repr(name) in refused.value.cause


def test_a_task_with_celerys_default_name_is_routed_from_every_process(
    fake_dist, tmp_path, redis_url, redis_server
):
    """A plain ``@shared_task`` in the plugin's package (named after its module) reaches
    the plugin's queue from a process that does not load the plugin: a shop worker."""
    package, dist = _tasks_plugin(fake_dist, "plainly", None)
    name = f"{package}.tasks.job"
    app = create_app(config(tmp_path, ["plainly"], PLUGIN_ERRORS="raise"))
    assert app.extensions["core_app"].records["plainly"].tasks == [name]
    assert app.extensions["core_app.router"](name, (), {}, {}) == {"queue": "plainly"}
    env = clean_env(
        CORE_APP_BROKER_URL=redis_url,
        CORE_APP_INSTANCE_PATH=str(tmp_path / "worker"),
        PYTHONPATH=str(dist.path),
    )
    probe = f"""
from core_app import create_app, roles, send_task
app = create_app(role=roles.Role.worker(["shop"]))
assert app.extensions["core_app"].records["plainly"].status == "disabled"
with app.app_context():
    send_task({name!r})
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    [message] = redis_server.client().lrange("plainly", 0, -1)
    assert json.loads(message)["headers"]["task"] == name


def test_the_doctor_reports_a_task_name_no_other_process_can_route(fake_dist, tmp_path):
    name = f"misc.job_{next(_unique)}"
    _, dist = _tasks_plugin(fake_dist, "oddly", name)
    env = subprocess_env(tmp_path, [dist.path], CORE_APP_PLUGINS="oddly,shop")
    done = subprocess.run(
        [sys.executable, "run.py", "plugins", "check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "oddly" in done.stdout and repr(name) in done.stdout, done.stdout
    assert "1 with problems" in done.stdout, done.stdout
