"""Real processes for the Celery tests: ``python run.py ...`` started as users start it.

Every process runs from the repository root (``cwd``), in a session of its own so that
the test can end it and everything it started (prefork children, the embedded worker)
by its process group id, and writes its output to a log file the test can show when
something goes wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from core_app.testing import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]

#: Start-up and shut-down budgets (seconds), generous for a loaded 2-core machine.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def clean_env(**settings: object) -> dict[str, str]:
    """The test's environment without any ``CORE_APP_``/``FLASK_`` setting, plus ``settings``.

    Values that are not strings are passed as JSON, the way ``from_prefixed_env`` reads them.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CORE_APP_", "FLASK_", "WERKZEUG_"))
    }
    for key, value in settings.items():
        env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


class Proc:
    """One command, its log file, and its process group."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._offset = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(
        self, ready: str | Callable[[], object] | None = None, timeout: float = START_TIMEOUT
    ) -> Proc:
        """Start the command; wait until ``ready`` appears in its new output (or returns
        something truthy), failing the test with the log if the process exits first."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if ready is not None:
            check = (lambda: ready in self.output()) if isinstance(ready, str) else ready
            wait_until(lambda: self.exited() or check(), timeout=timeout, interval=0.1)
            if self.exited():
                pytest.fail(f"{self} exited with {self.process.returncode}:\n{self.tail()}")
        return self

    def output(self) -> str:
        """What the process wrote since its (last) start."""
        if not self.log.exists():
            return ""
        return self.log.read_bytes()[self._offset :].decode(errors="replace")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Signal the process, wait for it, then end whatever is left of its group."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"{self} ignored signal {sig} for {timeout}s:\n{self.tail()}")
        self.kill_group()
        return self.process.returncode

    def kill_group(self) -> None:
        """SIGKILL every process left in this process's group (its session)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def __str__(self) -> str:
        return " ".join(self.command)


def run_py(*args: str) -> list[str]:
    """``python run.py ARGS`` with this interpreter."""
    return [sys.executable, "run.py", *args]


#: Passed to every worker: one prefork child, and no waiting a second for neighbours.
WORKER_ARGS = ("--concurrency", "1", "--loglevel", "INFO", "--without-mingle", "--without-gossip")


def worker(plugin: str, env: Mapping[str, str], log: Path, *celery_args: str) -> Proc:
    """``python run.py worker PLUGIN [ARGS]``, started and ready to consume."""
    return Proc(run_py("worker", plugin, *WORKER_ARGS, *celery_args), env, log).start(" ready.")


class Web(Proc):
    """``python run.py [ARGS] --port N``: the Werkzeug server, ready once /health answers."""

    def __init__(self, env: Mapping[str, str], log: Path, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        super().__init__(run_py(*args, "--port", str(self.port)), env, log)

    def start(
        self, ready: str | Callable[[], object] | None = None, timeout: float = START_TIMEOUT
    ) -> Web:
        super().start(ready or self._healthy, timeout)
        return self

    def _healthy(self) -> bool:
        try:
            return requests.get(self.url("/health"), timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def url(self, path: str) -> str:
        return self.base + path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url(path), timeout=kwargs.pop("timeout", 10), **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url(path), timeout=kwargs.pop("timeout", 10), **kwargs)

    def post_email(self, to: str = "ada@example.com", subject: str = "Hello") -> dict[str, Any]:
        """POST an email; assert the 202 and return its body (task_id, status_url)."""
        response = self.post(
            "/api/notifications/emails", json={"to": to, "subject": subject, "body": "Hi."}
        )
        assert response.status_code == 202, (response.status_code, response.text)
        return dict(response.json())

    def wait_for_state(self, status_url: str, states: Iterable[str], timeout: float = 30) -> Any:
        """Poll a status URL until its state is one of ``states``; return the body."""
        wanted = set(states)

        def state() -> dict[str, Any] | None:
            body = self.get(status_url).json()
            return body if body["state"] in wanted else None

        return wait_until(state, timeout=timeout, interval=0.2)


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Children, grandchildren... of ``pid``."""
    found = children(pid)
    return found + [grandchild for child in found for grandchild in descendants(child)]


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def write_plugin_dist(root: Path, name: str, files: Mapping[str, str]) -> Path:
    """An installed-looking plugin distribution in ``root`` (put it on PYTHONPATH).

    ``files`` maps paths inside the package ``name`` to their source. The ``dist-info``
    folder is what pip would leave: ``importlib_metadata`` finds the entry point there.
    """
    package = root / name
    package.mkdir(parents=True, exist_ok=True)
    for relative, source in {"__init__.py": "", **files}.items():
        (package / relative).write_text(textwrap.dedent(source))
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\nRequires-Dist: core-app>=1.0,<2\n"
    )
    (info / "entry_points.txt").write_text(f"[core_app.plugins]\n{name} = {name}\n")
    return root


def wait_for(condition: Callable[[], object], timeout: float = 20.0) -> Any:
    return wait_until(condition, timeout=timeout, interval=0.1)


def elapsed(since: float) -> float:
    return time.monotonic() - since
