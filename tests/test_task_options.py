"""Plugins' own Celery options (``core_app_task_options``): checked like every
declaration, limited to the plugin's own tasks, and in force wherever the tasks run."""

from __future__ import annotations

import itertools

import pytest
from celery.exceptions import TimeLimitExceeded
from fakes import blueprint_source, config
from procs import clean_env, wait_for, worker

from core_app import PluginConflictError, PluginDeclarationError, create_app, send_task
from core_app.roles import Role

SUMMARY, EMAIL_TASK = "shop.daily_sales_summary", "notifications.send_email"
EMAIL = {"to": "ada@example.com", "subject": "Hello", "body": "Hi."}
_unique = itertools.count(1)

#: The tasks of every plugin below; PLUGIN stands for its name.
TASKS = """
import time

from celery import shared_task

ATTEMPTS = []


@shared_task(name="PLUGIN.first")
def first():
    return 1


@shared_task(name="PLUGIN.flaky", autoretry_for=(KeyError,), retry_kwargs={"countdown": 0})
def flaky(error):
    ATTEMPTS.append(error)
    raise {"ValueError": ValueError, "KeyError": KeyError}[error]("flaky")


@shared_task(name="PLUGIN.nap")
def nap(seconds):
    time.sleep(seconds)
    return "woke up"
"""


def _plugin(fake_dist, options: str):
    """A plugin package defining the tasks above, whose ``core_app_task_options``
    returns ``options`` (Python source, PLUGIN standing for its name)."""
    n = next(_unique)
    plugin, package = f"opty{n}", f"opty_pkg_{n}"
    hook = f"""
    @hookimpl
    def core_app_task_options():
        return {options.replace("PLUGIN", plugin)}
    """
    dist = fake_dist(
        plugin,
        target=package,
        files={
            f"{package}/__init__.py": blueprint_source(plugin, body=hook),
            f"{package}/tasks.py": TASKS.replace("PLUGIN", plugin),
        },
    )
    return plugin, package, dist


def test_core_app_task_options_of_the_example_plugins(tmp_path):
    app = create_app(config(tmp_path, ["shop", "notifications"], PLUGIN_ERRORS="raise"))
    tasks = app.extensions["celery"].tasks
    assert tasks[SUMMARY].ignore_result is True, "nobody reads the daily summary's result"
    assert tasks[EMAIL_TASK].ignore_result is False, "the status URL reads it"


def test_core_app_task_options_for_all_tasks_then_each_task(fake_dist, tmp_path):
    plugin, _, _ = _plugin(
        fake_dist,
        """{
            "*": {"time_limit": 60, "soft_time_limit": 50, "acks_late": False},
            "PLUGIN.first": {"time_limit": 5, "soft_time_limit": 4.5, "rate_limit": "10/m",
                             "max_retries": 1, "default_retry_delay": 0, "track_started": True},
        }""",
    )
    app = create_app(config(tmp_path, [plugin, "shop"], PLUGIN_ERRORS="raise"))
    tasks = app.extensions["celery"].tasks
    first, nap = tasks[f"{plugin}.first"], tasks[f"{plugin}.nap"]
    assert (first.time_limit, first.soft_time_limit) == (5, 4.5)
    assert (first.rate_limit, first.max_retries, first.default_retry_delay) == ("10/m", 1, 0)
    assert first.track_started is True and first.acks_late is False
    assert (nap.time_limit, nap.soft_time_limit, nap.acks_late) == (60, 50, False)
    assert nap.rate_limit is None and nap.max_retries == 3  # Celery's defaults
    shop = tasks[SUMMARY]  # another plugin's task keeps the app-wide settings
    app_wide = app.extensions["celery"].conf
    assert (shop.time_limit, shop.acks_late) == (app_wide.task_time_limit, app_wide.task_acks_late)
    # Sent from this process, a task carries the time limits its plugin declared.
    assert first._get_exec_options()["time_limit"] == 5


def test_core_app_task_options_retry_policy_replaces_the_decorators(fake_dist, tmp_path):
    # The decorator retries KeyError; the plugin's options retry ValueError instead,
    # at most twice: three attempts in all.
    plugin, package, _ = _plugin(
        fake_dist,
        """{"PLUGIN.flaky": {"autoretry_for": (ValueError,), "max_retries": 2,
                              "retry_kwargs": {"countdown": 0}}}""",
    )
    app = create_app(config(tmp_path, [plugin], PLUGIN_ERRORS="raise"))
    flaky = app.extensions["celery"].tasks[f"{plugin}.flaky"]
    attempts = __import__(f"{package}.tasks", fromlist=["ATTEMPTS"]).ATTEMPTS
    with app.app_context():
        assert flaky.apply(args=["ValueError"]).state == "FAILURE"
        assert attempts == ["ValueError"] * 3
        attempts.clear()
        assert flaky.apply(args=["KeyError"]).state == "FAILURE"
        assert attempts == ["KeyError"], "no longer retried"


@pytest.mark.parametrize(
    ("options", "cause"),
    [
        ('["PLUGIN.first"]', "returned"),
        ('{"PLUGIN.first": "fast"}', "returned"),
        ('{"PLUGIN.first": {"colour": "red"}}', "unknown option 'colour'"),
        ('{"*": {"time_limit": -1}}', "'time_limit' for '*' is -1"),
        ('{"*": {"time_limit": True}}', "'time_limit' for '*' is True"),
        ('{"*": {"rate_limit": "fast"}}', "'rate_limit'"),
        ('{"*": {"ignore_result": "yes"}}', "'ignore_result'"),
        ('{"*": {"max_retries": 1.5}}', "'max_retries'"),
        ('{"*": {"autoretry_for": ["ValueError"]}}', "'autoretry_for'"),
        ('{"*": {"queue": "elsewhere"}}', "its own queue"),
        ('{"*": {"soft_time_limit": 10, "time_limit": 5}}', "soft_time_limit 10 >= time_limit"),
        ('{"PLUGIN.missing": {"ignore_result": True}}', "its task modules do not define"),
    ],
)
def test_core_app_task_options_invalid_are_refused(fake_dist, tmp_path, options, cause):
    plugin, _, _ = _plugin(fake_dist, options)
    with pytest.raises(PluginDeclarationError) as refused:
        create_app(config(tmp_path, [plugin], PLUGIN_ERRORS="raise"))
    assert refused.value.plugin == plugin
    assert cause in refused.value.cause
    assert "core_app_task_options" in str(refused.value) or "queue" in refused.value.fix


def test_core_app_task_options_refused_in_lenient_mode_leave_nothing_behind(fake_dist, tmp_path):
    plugin, _, _ = _plugin(fake_dist, '{"*": {"time_limit": 5}, "PLUGIN.first": {"x": 1}}')
    app = create_app(config(tmp_path, [plugin, "shop"], PLUGIN_ERRORS="skip"))
    record = app.extensions["core_app"].records[plugin]
    assert record.failed and "unknown option 'x'" in record.error.message
    tasks = app.extensions["celery"].tasks
    assert not [name for name in tasks if name.startswith(f"{plugin}.")]
    assert tasks[SUMMARY].ignore_result is True, "the other plugin keeps its options"


@pytest.mark.parametrize(
    ("role", "other_task", "other"),
    [
        (None, SUMMARY, "shop"),  # loaded here: its owner is known from its module
        ("worker", EMAIL_TASK, "notifications"),  # not loaded in this worker: by its name
    ],
)
def test_core_app_task_options_on_another_plugins_task_is_a_conflict(
    fake_dist, tmp_path, role, other_task, other
):
    plugin, _, _ = _plugin(fake_dist, f'{{"{other_task}": {{"ignore_result": False}}}}')
    plugins = [plugin, "shop", "notifications"]
    with pytest.raises(PluginConflictError) as refused:
        create_app(
            config(tmp_path, plugins, PLUGIN_ERRORS="raise"),
            role=Role.worker([plugin]) if role else None,
        )
    assert refused.value.plugin == plugin and refused.value.other == f"plugin {other!r}"
    assert other_task in refused.value.cause
    app = create_app(config(tmp_path / "lenient", plugins, PLUGIN_ERRORS="skip"))
    assert app.extensions["core_app"].records[plugin].failed
    assert app.extensions["celery"].tasks[SUMMARY].ignore_result is True


def test_core_app_task_options_yield_to_the_operators_annotations(tmp_path):
    annotations = {SUMMARY: {"ignore_result": False, "time_limit": 120}}
    app = create_app(
        config(tmp_path, ["shop"], PLUGIN_ERRORS="raise", CELERY={"task_annotations": annotations})
    )
    summary = app.extensions["celery"].tasks[SUMMARY]
    assert (summary.ignore_result, summary.time_limit) == (False, 120)


def test_core_app_task_options_store_results_only_where_asked(
    make_app, redis_url, redis_server, tmp_path
):
    """On real workers: the email's result is stored for its status URL, the daily
    summary's is not, unless a caller asks for it (``ignore_result=False``)."""
    app = make_app(BROKER_URL=redis_url, PLUGINS=["shop", "notifications"])
    env = clean_env(CORE_APP_BROKER_URL=redis_url, CORE_APP_INSTANCE_PATH=app.instance_path)
    running = worker("--all", env, tmp_path / "worker.log")
    try:
        with app.app_context():
            email = send_task(EMAIL_TASK, kwargs=EMAIL)
            summary = send_task(SUMMARY)
            asked = send_task(SUMMARY, ignore_result=False)
        assert email.get(timeout=20)["to"] == EMAIL["to"]
        assert asked.get(timeout=20) == {"hours": 24, "purchases": 0, "total_cents": 0}
        wait_for(lambda: f"[{summary.id}] succeeded" in running.output())
    finally:
        running.stop()
    stored = {key.decode() for key in redis_server.client().keys("celery-task-meta-*")}
    assert stored == {f"celery-task-meta-{email.id}", f"celery-task-meta-{asked.id}"}


def test_core_app_task_options_time_limit_ends_the_task_on_a_worker(
    fake_dist, make_app, redis_url, tmp_path
):
    plugin, _, dist = _plugin(fake_dist, '{"PLUGIN.nap": {"time_limit": 1}}')
    app = make_app(BROKER_URL=redis_url, PLUGINS=[plugin])
    env = clean_env(
        CORE_APP_BROKER_URL=redis_url,
        CORE_APP_INSTANCE_PATH=app.instance_path,
        PYTHONPATH=str(dist.path),
    )
    running = worker(plugin, env, tmp_path / "worker.log")
    try:
        with app.app_context():
            long_nap, short_nap = send_task(f"{plugin}.nap", [30]), send_task(f"{plugin}.nap", [0])
            with pytest.raises(TimeLimitExceeded):
                long_nap.get(timeout=20)
            assert short_nap.get(timeout=20) == "woke up"
    finally:
        running.stop()


def test_core_app_task_options_time_limit_above_task_time_limit_is_flagged(
    fake_dist, tmp_path, caplog
):
    """The visibility timeout is derived from TASK_TIME_LIMIT: a plugin's longer limit
    would let Redis deliver the task again while it runs, so start-up says so."""
    plugin, _, _ = _plugin(fake_dist, '{"PLUGIN.nap": {"time_limit": 900}}')
    create_app(config(tmp_path, [plugin], PLUGIN_ERRORS="raise", TASK_TIME_LIMIT=300))
    assert f"{plugin}.nap has time_limit=900 s, above TASK_TIME_LIMIT (300 s)" in caplog.text
    assert f"{plugin}.first has time_limit" not in caplog.text
