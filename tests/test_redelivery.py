"""Redelivery after a dead worker is bounded in time and in count.

Time: the visibility timeout is derived from the task time limit, the prefetch and the
longest countdown (core_app.celery_app.visibility_timeout), and a redelivered task whose
success is recorded does not run again. Count: a task delivered more than
``MAX_DELIVERIES`` times is parked in ``deadletter:<plugin>`` (core_app.deadletter), where
``python run.py deadletters`` lists and requeues it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from faultkit import Publisher, broker_fixture, client_app, email_worker_env, smtp_sink  # noqa: F401
from procs import REPO, clean_env, run_py, wait_for, worker, write_plugin_dist

from core_app.celery_app import sweep_interval, visibility_timeout
from core_app.config import DEFAULTS

# -- the visibility timeout ----------------------------------------------------------


def derived(**settings: object) -> int:
    return visibility_timeout({**DEFAULTS, **settings})


def test_the_default_visibility_timeout_covers_prefetched_tasks_and_countdowns():
    # 4 reserved tasks x 300 s + a 180 s countdown + 10 s
    assert derived() == 4 * 300 + 180 + 10 == 1390
    assert sweep_interval(1390) == 60


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"CELERY": {"worker_prefetch_multiplier": 1}}, 300 + 180 + 10),
        ({"CELERY": {"worker_disable_prefetch": True}}, 300 + 180 + 10),
        ({"TASK_TIME_LIMIT": 60, "MAX_COUNTDOWN": 32}, 4 * 60 + 32 + 10),
        ({"CELERY": {"task_time_limit": 20}}, 4 * 20 + 180 + 10),
        ({"VISIBILITY_TIMEOUT": 45, "TASK_TIME_LIMIT": 600}, 45),
    ],
)
def test_the_visibility_timeout_follows_the_settings_it_is_derived_from(settings, expected):
    assert derived(**settings) == expected


def test_the_celery_app_gets_the_derived_timeout_and_the_time_limit(make_app, redis_url):
    app = make_app(BROKER_URL=redis_url, TASK_TIME_LIMIT=5, MAX_COUNTDOWN=5)
    conf = app.extensions["celery"].conf
    assert conf.task_time_limit == 5
    assert conf.broker_transport_options["visibility_timeout"] == 4 * 5 + 5 + 10
    assert conf.broker_transport_options["unacked_restore_interval"] == 3
    assert conf.worker_deduplicate_successful_tasks is True


def test_a_countdown_beyond_max_countdown_is_logged(make_app, redis_url, caplog):
    app = make_app(BROKER_URL=redis_url, MAX_COUNTDOWN=30)
    celery = app.extensions["celery"]
    with caplog.at_level(logging.WARNING, logger="core_app.celery_app"):
        celery.send_task("notifications.send_email", kwargs={}, countdown=10)
        assert not caplog.records
        celery.send_task("notifications.send_email", kwargs={}, countdown=90)
    [record] = caplog.records
    assert "beyond MAX_COUNTDOWN (30.0 s)" in record.getMessage()


# -- dead letters --------------------------------------------------------------------

#: A plugin whose task kills its own pool process until a marker file exists.
CRASHY_TASKS = """\
import os
import signal
from pathlib import Path

from celery import shared_task


@shared_task(name="crashy.crash")
def crash(journal, marker):
    with open(journal, "a") as out:
        out.write(f"start {os.getpid()}\\n")
    if not Path(marker).exists():
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"
"""


@pytest.fixture(scope="module")
def crashy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plugin_dist(
        tmp_path_factory.mktemp("crashy-site"), "crashy", {"tasks.py": CRASHY_TASKS}
    )


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_py(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_task_that_kills_its_worker_is_parked_after_max_deliveries_and_requeued(
    broker, make_app, crashy, tmp_path
):
    env = clean_env(
        **broker.env(),
        CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"),
        CORE_APP_MAX_DELIVERIES=3,
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(crashy), env.get("PYTHONPATH")]))
    journal, marker = tmp_path / "journal", tmp_path / "marker"
    celery = make_app(**broker.config()).extensions["celery"]
    proc = worker("crashy", env, tmp_path / "worker.log")
    try:
        result = celery.send_task(
            "crashy.crash", kwargs={"journal": str(journal), "marker": str(marker)}, queue="crashy"
        )
        wait_for(lambda: result.state == "FAILURE", timeout=60)
        assert "MAX_DELIVERIES=3" in str(result.result)
        assert len(journal.read_text().splitlines()) == 3, "three runs, the fourth parked"

        listed = run_cli(env, "deadletters", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [entry] = json.loads(listed.stdout)
        assert entry["plugin"] == "crashy" and entry["id"] == result.id
        assert entry["task"] == "crashy.crash" and entry["deliveries"] == 4
        assert "crashy.crash" in run_cli(env, "deadletters", "list", "crashy").stdout

        assert run_cli(env, "deadletters", "requeue", "crashy").returncode == 2  # --id or --all
        marker.touch()
        requeued = run_cli(env, "deadletters", "requeue", "crashy", "--id", result.id)
        assert requeued.returncode == 0, requeued.stderr
        assert requeued.stdout.strip() == f"requeued {result.id}"
        again = celery.AsyncResult(result.id)  # result has cached its FAILURE
        wait_for(lambda: again.state == "SUCCESS", timeout=30)
        assert again.result == "survived"
        assert run_cli(env, "deadletters", "list").stdout.strip() == "No parked tasks."
        missing = run_cli(env, "deadletters", "requeue", "crashy", "--id", result.id)
        assert missing.returncode == 1 and "Not parked for crashy" in missing.stderr
    finally:
        proc.stop()
    assert "parked in deadletter:crashy" in proc.output()


# -- SIGKILL of the worker's main process, five times ---------------------------------

EMAILS = 500
KILLS = 5
#: Small enough for a test: the visibility timeout is 4 x 10 + 5 + 10 = 55 s.
TIME_LIMIT, COUNTDOWN = 10, 5


@pytest.mark.faults
def test_five_sigkills_of_the_worker_lose_no_email_and_redeliver_within_the_bound(broker, tmp_path):
    """Redis redelivers a dead worker's messages after the visibility timeout (+ the
    sweep): that is the bound. RabbitMQ redelivers them the moment the connection
    closes: the test checks none is left held after each kill."""
    timeout = derived(TASK_TIME_LIMIT=TIME_LIMIT, MAX_COUNTDOWN=COUNTDOWN)
    bound = timeout + sweep_interval(timeout) if broker.kind == "redis" else 0
    workers = []
    kills: list[float] = []
    returned: list[float] = []  # RabbitMQ: seconds from a kill to nothing held
    with smtp_sink() as (sink, smtp_url):
        env = email_worker_env(
            broker,
            tmp_path / "worker",
            smtp_url,
            CORE_APP_TASK_TIME_LIMIT=TIME_LIMIT,
            CORE_APP_MAX_COUNTDOWN=COUNTDOWN,
        )
        publisher = Publisher(client_app(broker, tmp_path / "client"), EMAILS)
        try:
            publisher.run()  # all queued first; the worker works through them
            started = time.monotonic()
            for number in range(KILLS + 1):
                log = tmp_path / f"worker{number}.log"
                workers.append(worker("notifications", env, log, "--concurrency", "2"))
                if number == KILLS:
                    break
                sent = len(sink.received)
                wait_for(lambda n=sent + 40: len(sink.received) >= n, timeout=60)
                os.kill(workers[-1].pid, signal.SIGKILL)  # its pool processes die with it
                kills.append(time.monotonic())
                if broker.kind == "amqp":  # fails the test unless all are back within 10 s
                    wait_for(lambda: broker.held("notifications") == 0, timeout=10)
                    returned.append(time.monotonic() - kills[-1])
            published = set(publisher.published)
            # The backlog left after the last kill (about 300 emails) takes most of this.
            wait_for(
                lambda: published <= set(sink.task_ids()),
                timeout=max(bound, 60) + 60,
            )
        finally:
            missing = sorted(set(publisher.published) - set(sink.task_ids()))
            seen = {
                task_id: [
                    line
                    for proc in workers
                    for line in proc.output().splitlines()
                    if task_id in line
                ]
                for task_id in missing
            }
            (tmp_path / "missing.json").write_text(json.dumps(seen, indent=1))
            for proc in workers[:-1]:
                proc.kill_group()
            workers[-1].stop()
    arrived = sink.first_arrival()
    lost = published - set(arrived)
    waits = [arrived[task_id] - publisher.published[task_id] for task_id in published - lost]
    late = max(arrived[task_id] - kills[-1] for task_id in published - lost)
    duplicates = len(sink.task_ids()) - len(arrived)
    total = max(arrived.values()) - started
    print(
        f"{broker.kind}: arrived {len(published - lost)}/{EMAILS} in {total:.1f} s, "
        f"duplicates {duplicates}, max wait {max(waits):.1f} s, last arrival "
        f"{late:.1f} s after the last kill (redelivery bound {bound} s)"
        + (f", held messages back {max(returned):.1f} s after a kill at most" if returned else "")
    )
    assert not lost
    if broker.kind == "redis":
        assert late <= bound + 10, "every task held by a killed worker came back in the bound"
    assert duplicates <= 2 * KILLS, "at most the tasks in flight at the kills ran twice"
