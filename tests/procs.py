"""Real processes for the host's tests: ``python run.py ...`` started as users start it.

Built on :mod:`core_app.testing` (``Process``, ``clean_env``, ``write_plugin_dist``):
every process runs from the repository root, in a session of its own so that the test
can end it and everything it started (prefork children, the embedded worker) by its
process group id, and writes its output to a log file the test can show.
"""

from __future__ import annotations

import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import requests

import core_app.testing
from core_app.testing import Process, free_port, wait_until
from core_app.testing import clean_env as clean_env  # re-exported: the tests' one builder

REPO = Path(__file__).resolve().parents[1]

#: Start-up and shut-down budgets (seconds), generous for a loaded 2-core machine.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


class Proc(Process):
    """A :class:`core_app.testing.Process` run from the repository root, with the
    start-up budget of a loaded machine."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        super().__init__(command, env, log, cwd=REPO)

    def start(
        self, ready: str | Callable[[], object] | None = None, timeout: float = START_TIMEOUT
    ) -> Self:
        return super().start(ready, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        return super().stop(sig, timeout)


def production_env(paths: Sequence[Path] = (), /, **settings: object) -> dict[str, str]:
    """:func:`clean_env` for a production process: a random SECRET_KEY of full strength."""
    secret = secrets.token_hex(32)
    return clean_env(paths, CORE_APP_ENV="production", CORE_APP_SECRET_KEY=secret, **settings)


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
        self,
        ready: str | Callable[[], object] | None = None,
        timeout: float = START_TIMEOUT,
        *,
        serving: bool = True,
    ) -> Self:
        """Start it and wait until ``ready`` (default: it serves), or not at all for a
        command that must never serve (``serving=False``)."""
        return super().start(ready or (self.serves if serving else None), timeout)

    def serves(self) -> bool:
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
    """A plugin distribution ``name`` 1.0 whose package ``name`` holds ``files`` (paths
    inside the package), written into ``root``; put ``root`` on PYTHONPATH."""
    package = {f"{name}/{path}": source for path, source in {"__init__.py": "", **files}.items()}
    return core_app.testing.write_plugin_dist(root, name, plugins={name: name}, files=package)


def wait_for(condition: Callable[[], object], timeout: float = 20.0) -> Any:
    return wait_until(condition, timeout=timeout, interval=0.1)


def elapsed(since: float) -> float:
    return time.monotonic() - since
