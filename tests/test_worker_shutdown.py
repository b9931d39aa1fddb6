"""Stopping a worker as systemd and ``timeout`` do: SIGTERM to its whole process group.

On a transport without an event loop (the embedded broker's filesystem transport), an
idle prefork child waits for work holding the pool's shared read lock; a SIGTERM that
killed it there left the lock taken, and the worker then hung at exit in billiard's
``Pool._help_stuff_finish`` (about one stop in three, once for over ten minutes). The
worker command now has its pool children ignore SIGTERM, so a group SIGTERM is a warm
shutdown run by the parent (see ``core_app.worker_start.leave_sigterm_to_the_parent``).

The embedded broker's URL names a host, so kombu no longer logs "No hostname was
supplied" on every connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

import pytest
from procs import Proc, clean_env, run_py

from core_app import create_app, send_task
from core_app.testing import wait_until

#: What the issue asks: each worker gone, children included, this long after the signal.
STOP_WITHIN = 10.0
HOSTNAME_WARNING = "No hostname was supplied"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _start_and_stop_by_group(tmp_path: Path, run: int) -> tuple[float, str]:
    """``python run.py worker notifications`` on the embedded broker, SIGTERM to its
    process group once it is ready; the seconds until the whole group is gone."""
    env = clean_env(CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"))
    proc = Proc(
        run_py("worker", "notifications", "--loglevel", "INFO"), env, tmp_path / f"w{run}.log"
    )
    proc.start(" ready.")
    try:
        signalled = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.process is not None
        with contextlib.suppress(Exception):
            proc.process.wait(timeout=STOP_WITHIN)
        wait_until(lambda: not _group_alive(proc.pid), timeout=1 + STOP_WITHIN / 10)
        took = time.monotonic() - signalled
    except BaseException:
        log = proc.tail()
        proc.kill_group()
        pytest.fail(f"run {run}: the worker's group outlived a group SIGTERM:\n{log}")
    assert proc.process.returncode == 0, proc.tail()
    return took, proc.output()


def test_a_group_sigterm_stops_an_embedded_worker_and_its_children(tmp_path):
    took, log = _start_and_stop_by_group(tmp_path, 0)
    assert took < STOP_WITHIN, f"{took:.1f} s"
    assert "Warm shutdown" in log
    assert HOSTNAME_WARNING not in log


@pytest.mark.slow
def test_thirty_group_sigterms_in_a_row_each_stop_within_ten_seconds(tmp_path):
    times = []
    for run in range(30):
        took, log = _start_and_stop_by_group(tmp_path, run)
        assert took < STOP_WITHIN, f"run {run}: {took:.1f} s"
        assert HOSTNAME_WARNING not in log
        times.append(took)
    print(f"\ngroup SIGTERM to exit: max {max(times):.1f} s, mean {sum(times) / 30:.1f} s")


def test_publishing_on_the_embedded_broker_logs_no_hostname_warning(tmp_path, caplog):
    app = create_app({"INSTANCE_PATH": str(tmp_path / "instance"), "PLUGINS": ["notifications"]})
    with caplog.at_level(logging.WARNING), app.app_context():
        send_task(
            "notifications.send_email",
            kwargs={"to": "ada@example.com", "subject": "Hi", "body": "Hello."},
        )
    assert app.extensions["celery"].conf.broker_url == "filesystem://localhost/"
    assert HOSTNAME_WARNING not in caplog.text
