"""A plugin that fails after its tasks were registered loses them: nothing of it runs."""

from __future__ import annotations

import itertools

import pytest
from fakes import blueprint_source, config

from core_app import TaskUnavailable, create_app, send_task

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
