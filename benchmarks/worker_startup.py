"""Benchmark 6: start-up of ``python run.py worker X`` with 300 plugins installed.

A throwaway virtualenv (``core_app.testing.child_venv``: core_app, Flask and Celery come
from the running environment) gets 300 generated plugin distributions, as in section 2:
each package's entry point is its ``plugin`` module (a blueprint with one route and the
``core_app_blueprint`` hook) and its ``tasks`` module holds one ``@shared_task`` and
imports nothing but Celery, so a plain Celery app can import it alone. Two commands
are started in turn, on the same redis-server, with the same Celery options
(``--pool solo --loglevel INFO --without-gossip --without-mingle --without-heartbeat``):

- core: ``python run.py worker benchplug_0000`` from the repository root, the other
  installed plugins (the examples) disabled so that exactly 300 are installed;
- bare: ``celery -A bare_celery worker`` on a plain ``Celery(broker=redis)`` app that
  imports the same task module (``benchplug_0000.tasks``), consuming the same queue.

Each is timed from just before it is executed to the line Celery logs once the worker
consumes (``<name>@<host> ready.``); CPU time (user + system, kept across an ``exec``)
is read at that moment too. Rounds alternate the order (ABBA) after one warm-up start of
each (bytecode, file cache, the discovery cache in the instance folder); the figure is
the median of the per-round ratios. The task list in Celery's banner tells how many of
the 300 plugins' tasks the worker registered.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from common import (
    BENCH_DIR,
    REPO,
    Processes,
    Result,
    make_venv,
    median,
    ms,
    other_installed_plugins,
    spread,
    tail,
    tree_cpu_seconds,
    write_distribution,
)
from startup import PLUGIN_SOURCE, plugin_name

SIZE = 300
TARGET = plugin_name(0)
TASKS_SOURCE = '''"""Tasks of the generated benchmark plugin {name}."""

from celery import shared_task


@shared_task(name="{name}.noop")
def noop():
    return None
'''
# With BENCH_TRACE set (the warm-up starts only, never a timed one), each interpreter that
# starts in the venv writes "exec TOKEN ARGV" to that file and each plugin module it imports
# "import TOKEN NAME": how many processes (re-execs) a start took, and what each imported.
# (Python 3.11 runs a venv's .pth files twice per start: the token is made once.)
TRACE_PTH = (
    "import os, sys; _new = not hasattr(sys, '_bench_token'); "
    "sys._bench_token = getattr(sys, '_bench_token', None) or os.urandom(4).hex(); "
    "_trace = _new and os.environ.get('BENCH_TRACE'); "
    "_trace and open(_trace, 'a').write(f'exec {sys._bench_token} {sys.orig_argv}\\n')\n"
)
TRACE_IMPORT = """
import os as _os, sys as _sys

if _os.environ.get("BENCH_TRACE"):
    with open(_os.environ["BENCH_TRACE"], "a") as _trace:
        _trace.write(f"import {getattr(_sys, '_bench_token', '-')} {__name__}\\n")
"""
CELERY_FLAGS = [
    *("--pool", "solo", "--loglevel", "INFO"),
    *("--without-gossip", "--without-mingle", "--without-heartbeat"),
]
READY = re.compile(rb"\S+@\S+ ready\.")
BANNER_TASK = re.compile(rb"\. (benchplug_\d+)\.noop\b")


@dataclass
class Settings:
    rounds: int


QUICK = Settings(9)
FULL = Settings(21)


@dataclass
class Start:
    """One start of a worker: seconds to its ready line, CPU seconds by then, and the
    generated plugins whose tasks its banner lists."""

    seconds: float
    cpu_seconds: float
    plugins: list[str]


def build_venv(root: Path) -> str:
    if root.exists():
        shutil.rmtree(root)
    python, site = make_venv(root)
    for name in (plugin_name(i) for i in range(SIZE)):
        write_distribution(
            site,
            distribution=f"core-app-{name.replace('_', '-')}",
            package=name,
            files={
                "__init__.py": f'"""Generated benchmark plugin {name}."""\n',
                "plugin.py": PLUGIN_SOURCE.format(name=name) + TRACE_IMPORT,
                "tasks.py": TASKS_SOURCE.format(name=name),
            },
            entry_points={name: f"{name}.plugin"},
        )
    (site / "_bench_trace.pth").write_text(TRACE_PTH)
    return python


def traced(trace: Path) -> str:
    """What one traced start did: interpreters started, plugin modules each imported."""
    execs: list[str] = []
    imports: dict[str, int] = {}
    for line in trace.read_text().splitlines() if trace.exists() else []:
        kind, token, _ = line.split(" ", 2)
        if kind == "exec":
            execs.append(token)
        else:
            imports[token] = imports.get(token, 0) + 1
    counts = ", ".join(str(imports.get(token, 0)) for token in execs)
    return f"{len(execs)} interpreter start(s) importing {counts} generated plugin module(s)"


def commands(
    python: str, redis_url: str, instance: Path
) -> dict[str, tuple[list[str], dict[str, str], Path]]:
    base = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": ""}
    core_env = {
        **base,
        "CORE_APP_BROKER_URL": redis_url,
        "CORE_APP_INSTANCE_PATH": str(instance),
        "CORE_APP_PLUGIN_ERRORS": "raise",
        "CORE_APP_DISABLED_PLUGINS": ",".join(other_installed_plugins()),
    }
    bare_env = {
        **base,
        "BENCH_BROKER_URL": redis_url,
        "BENCH_TASK_MODULE": f"{TARGET}.tasks",
    }
    return {
        "core": ([python, "run.py", "worker", TARGET, *CELERY_FLAGS], core_env, REPO),
        "bare": (
            [python, "-m", "celery", "-A", "bare_celery", "worker", "-Q", TARGET, *CELERY_FLAGS],
            bare_env,
            BENCH_DIR,
        ),
    }


def start_once(
    procs: Processes,
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    log: Path,
    timeout: float = 120.0,
) -> Start:
    """Start ``command``, wait for its ready line, stop it; the time and CPU it took."""
    lines: queue.Queue[tuple[float, bytes]] = queue.Queue()
    began = time.perf_counter()
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    procs.adopt(process)
    assert process.stdout is not None
    reader = threading.Thread(target=pump, args=(process.stdout, lines), daemon=True)
    reader.start()
    output: list[bytes] = []
    ready: tuple[float, float] | None = None  # (seconds, CPU seconds) at the ready line
    try:
        deadline = began + timeout
        while ready is None and time.perf_counter() < deadline:
            try:
                at, line = lines.get(timeout=max(0.01, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if not line:  # end of output: the process exited
                break
            output.append(line)
            if READY.search(line):
                ready = (at - began, tree_cpu_seconds(process.pid))
    finally:
        procs.stop(process)
        reader.join(timeout=10)
        while not lines.empty():
            output.append(lines.get_nowait()[1])
        log.write_bytes(b"".join(output))
    if ready is None:
        raise RuntimeError(
            f"{' '.join(command)} (cwd {cwd}) did not log 'ready.' within {timeout:.0f} s, "
            f"exit status {process.returncode}:\n{tail(log)}"
        )
    plugins = sorted({m.group(1).decode() for m in BANNER_TASK.finditer(b"".join(output))})
    return Start(*ready, plugins)


def pump(stdout: IO[bytes], lines: queue.Queue[tuple[float, bytes]]) -> None:
    """Put each line of ``stdout`` on ``lines`` with the time it arrived; b"" at the end."""
    for line in iter(stdout.readline, b""):
        lines.put((time.perf_counter(), line))
    lines.put((time.perf_counter(), b""))


def run(quick: bool, workdir: Path, redis_url: str) -> list[Result]:
    settings = QUICK if quick else FULL
    workdir.mkdir(parents=True, exist_ok=True)
    python = build_venv(workdir / "venv")
    sides = commands(python, redis_url, workdir / "instance")
    starts: dict[str, list[Start]] = {"core": [], "bare": []}
    trace: dict[str, str] = {}
    with Processes() as procs:
        for key, (command, env, cwd) in sides.items():  # warm-up: bytecode, caches; traced
            trace_file = workdir / f"{key}_trace.txt"
            env = {**env, "BENCH_TRACE": str(trace_file)}
            start_once(procs, command, env, cwd, workdir / f"{key}_warmup.log")
            trace[key] = traced(trace_file)
        for round_ in range(settings.rounds):
            for key in ["core", "bare"] if round_ % 2 == 0 else ["bare", "core"]:
                log = workdir / f"{key}_{round_}.log"
                starts[key].append(start_once(procs, *sides[key], log))
    for key, runs in starts.items():
        if any(TARGET not in run.plugins for run in runs):
            raise RuntimeError(f"the {key} worker did not register {TARGET}.noop: {runs}")
    pairs = list(zip(starts["core"], starts["bare"], strict=True))
    wall = [c.seconds / b.seconds for c, b in pairs]
    cpu = [c.cpu_seconds / b.cpu_seconds for c, b in pairs]
    core_s = median([c.seconds for c, _ in pairs])
    bare_s = median([b.seconds for _, b in pairs])
    core_cpu = median([c.cpu_seconds for c, _ in pairs])
    bare_cpu = median([b.cpu_seconds for _, b in pairs])
    registered = max(len(c.plugins) for c, _ in pairs)
    how = (
        f"{settings.rounds} alternating rounds after one warm-up start each; "
        f"{' '.join(CELERY_FLAGS)}; {SIZE} generated plugins installed, each with a tasks "
        f"module; the core worker's banner listed the tasks of {registered} of them; "
        f"a traced start of core_app took {trace['core']}, bare Celery {trace['bare']}"
    )
    return [
        Result(
            f"Worker start-up with {SIZE} plugins, exec to 'ready.': "
            "python run.py worker X / bare Celery worker",
            median(wall),
            "<= 1.2",
            f"median wall time core_app {ms(core_s)}, bare Celery {ms(bare_s)}; per-round "
            f"ratios {spread(wall)}; {how}",
            "6 worker start-up",
        ),
        Result(
            f"Worker start-up CPU with {SIZE} plugins: python run.py worker X / bare Celery",
            median(cpu),
            None,
            f"CPU time (user + system, across exec) by the ready line: core_app "
            f"{ms(core_cpu)}, bare Celery {ms(bare_cpu)}; per-round ratios {spread(cpu)}",
            "6 worker start-up",
        ),
    ]
