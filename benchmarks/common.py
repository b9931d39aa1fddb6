"""Shared pieces of the benchmarks: results, statistics, processes, generated plugins.

Every figure is a ratio of two things measured in the same run, alternating A and B,
reduced to the median over several rounds: the machine is small and noisy, so absolute
times only ever appear in a result's ``detail``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core_app.testing import Process

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable


# -- results ----------------------------------------------------------------------------


@dataclass
class Result:
    """One row of the table: a ratio, the target it should meet, and how it was got."""

    name: str
    ratio: float | None
    target: str | None
    detail: str
    section: str = ""

    @property
    def met(self) -> bool | None:
        return target_met(self.ratio, self.target)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def target_met(ratio: float | None, target: str | None) -> bool | None:
    """Whether ``ratio`` satisfies a target such as ``">= 0.98"``; None without a target."""
    if target is None or ratio is None:
        return None
    op, _, value = target.partition(" ")
    bound = float(value)
    checks: dict[str, Callable[[float, float], bool]] = {
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
        "==": lambda a, b: abs(a - b) < 1e-9,
    }
    return checks[op](ratio, bound)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank on sorted data."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return float(ordered[rank])


def ms(seconds: float) -> str:
    """Seconds as a short millisecond string for details."""
    value = seconds * 1000
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def spread(values: Sequence[float]) -> str:
    """``min..max`` of per-round ratios, to show how much the rounds agreed."""
    return f"{min(values):.3f}..{max(values):.3f}"


def quartiles(values: Sequence[float]) -> str:
    """The middle half of per-round ratios, a fairer picture of the spread than min..max."""
    return f"{percentile(values, 25):.3f}..{percentile(values, 75):.3f}"


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


# -- processes --------------------------------------------------------------------------


class Processes:
    """Every process a benchmark starts, all ended on exit.

    Each is a :class:`core_app.testing.Process`: a session leader, so that its whole
    group (gunicorn's or Celery's children, and nothing else) can be ended by its id.
    """

    def __init__(self) -> None:
        self.started: list[Process] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        environ = {**os.environ, **(env or {})}
        process = Process(command, environ, log or Path(os.devnull), cwd=cwd).start()
        self.started.append(process)
        assert process.process is not None
        return process.process

    def adopt(self, popen: subprocess.Popen[bytes]) -> None:
        """End ``popen`` (started in a session of its own by the caller) on exit too."""
        process = Process([str(popen.args)], {}, Path(os.devnull))
        process.process = popen
        self.started.append(process)

    def stop(self, popen: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        for process in [p for p in self.started if p.process is popen]:
            process.stop(timeout=timeout)
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            if process.process is not None:
                self.stop(process.process)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process's children (gunicorn's
    workers, say) and the process itself."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for each in [pid, *map(int, children)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def run_json(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> Any:
    """Run a helper process that prints one JSON document, and return it."""
    done = subprocess.run(
        list(command),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_status(port: int, path: str, method: str = "GET", body: Any = None) -> int:
    """Status of one request to 127.0.0.1:port, 0 when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def wait_http(
    port: int, path: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}:\n{tail(log)}")
        return http_status(port, path) == 200

    wait_for(up, timeout, f"http://127.0.0.1:{port}{path}")


def tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""


# -- generated plugins ------------------------------------------------------------------


def write_distribution(
    site: Path,
    *,
    distribution: str,
    package: str,
    files: Mapping[str, str],
    entry_points: Mapping[str, str],
    version: str = "1.0.0",
    requires: Sequence[str] = ("core-app<2,>=1.0",),
) -> None:
    """Write a package and its ``*.dist-info`` into ``site``, as pip would leave them
    (:func:`core_app.testing.write_plugin_dist`).

    ``files`` maps paths inside the package to their source; ``entry_points`` maps
    names of the ``core_app.plugins`` group to their targets.
    """
    from core_app.testing import write_plugin_dist

    write_plugin_dist(
        site,
        distribution,
        plugins=entry_points,
        files={f"{package}/{path}": source for path, source in files.items()},
        version=version,
        requires=requires,
    )


def make_venv(path: Path) -> tuple[str, Path]:
    """A throwaway virtualenv that sees this environment's packages (core_app, flask...)
    through ``core_app.testing.child_venv`` (not ``--system-site-packages``, which would
    show the base interpreter's); returns its python and its site-packages folder."""
    from core_app.testing import child_venv

    python = str(child_venv(path))
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    return python, Path(purelib)


def other_installed_plugins() -> list[str]:
    """Names of the plugins installed in this Python (the examples), to disable them."""
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group="core_app.plugins")})


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    started = time.perf_counter()
    ended: list[float] = []
    yield lambda: (ended[0] if ended else time.perf_counter()) - started
    ended.append(time.perf_counter())
