"""Sustained load on gunicorn: zero errors, and no worker's memory keeps growing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from core_app.testing import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 60
RATE = 150  # requests per second, in total


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.slow
def test_sustained_load_has_no_errors_and_flat_memory(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CORE_APP_INSTANCE_PATH": str(tmp_path / "instance"),
        "CORE_APP_PLUGINS": "shop,notifications",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "3",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "run:app",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_until(lambda: _healthy(port), timeout=30)
        warmup = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "loadgen.py"), str(port), str(RATE), "5"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert json.loads(warmup.stdout)["errors"] == 0
        pids = _worker_pids(server.pid)
        assert len(pids) == 3
        start = {pid: _rss_kib(pid) for pid in pids}
        load = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "loadgen.py"),
                str(port),
                str(RATE),
                str(SECONDS),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        samples = []
        while load.poll() is None:
            time.sleep(5)
            samples.append({pid: _rss_kib(pid) for pid in pids})
        summary = json.loads(load.communicate(timeout=30)[0])
        end = {pid: _rss_kib(pid) for pid in pids}
        report = {pid: f"{start[pid]} KiB -> {end[pid]} KiB" for pid in pids}
        print(f"load: {summary}; RSS per gunicorn worker: {report}")
        assert summary["errors"] == 0
        assert summary["ok"] >= RATE * SECONDS * 0.9
        for pid in pids:
            halfway = samples[len(samples) // 2][pid]
            # Growth in the second half must be marginal: a leak keeps growing steadily.
            assert end[pid] - halfway < 4096, (pid, start[pid], halfway, end[pid])
    finally:
        server.terminate()
        server.wait(timeout=30)
