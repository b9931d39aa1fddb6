"""Helpers for tests that run the host as its users do: in child processes and
environments of their own, with plugins installed as distributions.

:func:`clean_env` builds a child's environment without the developer's settings,
:func:`run_command` runs a command to its end, :class:`Process` runs one in the
background (its own process group and log), :func:`write_plugin_dist` installs a fake
plugin distribution on a path, :func:`child_venv` makes a virtualenv. The pytest plugin
(:mod:`core_app.testing`) builds its fixtures on them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import site
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

import pytest

from .servers import wait_until


def child_venv(path: Path, *, with_pip: bool = False) -> Path:
    """A throwaway virtualenv at ``path`` that sees the *running* environment's packages.

    ``--system-site-packages`` would expose the base interpreter's site-packages, not
    those of the environment running now (a tox env, a developer's venv), where core_app
    is installed. Instead, a ``.pth`` file in the new environment's site-packages adds
    each site-packages folder of the running environment with ``site.addsitedir``, which
    also runs their own ``.pth`` files (editable installs). What is installed into the new
    environment comes first on its ``sys.path`` and is invisible outside it. With
    ``with_pip`` it gets its own pip. Returns the path of its ``python``.
    """
    path = Path(path)
    if importlib.util.find_spec("virtualenv") is not None:  # bundles pip: needs no ensurepip
        seed = [] if with_pip else ["--no-seed"]
        command = [sys.executable, "-m", "virtualenv", "--quiet", *seed, str(path)]
    else:
        seed = [] if with_pip else ["--without-pip"]
        command = [sys.executable, "-m", "venv", *seed, str(path)]
    made = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if made.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {made.returncode}:\n{made.stderr}")
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    sites = [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    if site.ENABLE_USER_SITE:
        sites.append(site.getusersitepackages())
    wanted = {os.path.realpath(folder) for folder in sites}
    ordered = (os.path.realpath(entry) for entry in sys.path if entry)  # in sys.path's order
    folders = [f for f in dict.fromkeys(ordered) if f in wanted and os.path.isdir(f)]
    line = "import site; " + "; ".join(f"site.addsitedir({f!r})" for f in folders)
    (Path(purelib) / "_core_app_running_env.pth").write_text(line + "\n")
    return python


def clean_env(paths: Sequence[Path] = (), /, **settings: object) -> dict[str, str]:
    """The environment for a child process: this one's without PYTHONPATH, VIRTUAL_ENV or
    any ``CORE_APP_``, ``FLASK_``, ``WERKZEUG_`` or ``PYTEST_`` variable (a developer's own
    settings, or this pytest run's, must not leak into a test), plus ``settings``. Values
    that are not strings are passed as JSON, the way ``from_prefixed_env`` reads them;
    ``paths`` (folders of fake distributions) become PYTHONPATH.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CORE_APP_", "FLASK_", "WERKZEUG_", "PYTEST_"))
        and key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(str(path) for path in paths)
    for key, value in settings.items():
        env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


def run_command(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | str | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end with its output captured as text (never raises on exit
    status: the test asserts on it, and shows stderr when it is wrong)."""
    return subprocess.run(
        list(command),
        env=None if env is None else dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Process:
    """A long-running command (a worker, a server) in a session of its own.

    Its output goes to a log file the test can show when something goes wrong; being a
    session leader, it and everything it started (prefork children, an embedded worker)
    can be ended by its process group id.
    """

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        cwd: Path | str | None = None,
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.log = Path(log)
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def __str__(self) -> str:
        return " ".join(self.command)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self} was never started"
        return self.process.pid

    def start(self, ready: str | Callable[[], object] | None = None, timeout: float = 60.0) -> Self:
        """Start the command; wait until ``ready`` appears in its new output (or returns
        something truthy), failing the test with the log if the process exits first."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if ready is not None:
            self.wait_for(ready, timeout)
        return self

    def wait_for(self, ready: str | Callable[[], object], timeout: float = 60.0) -> Self:
        """Wait until ``ready`` appears in the output since the start (or returns something
        truthy), failing the test with the log if the process exits first."""
        check = (lambda: ready in self.output()) if isinstance(ready, str) else ready
        wait_until(lambda: self.exited() or check(), timeout=timeout, interval=0.1)
        if self.process is not None and self.process.poll() is not None:
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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the process, wait for it, then end whatever is left of its group; a
        process that ignores the signal for ``timeout`` seconds fails the test."""
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
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)


def write_plugin_dist(
    site: Path,
    distribution: str,
    *,
    plugins: Mapping[str, str],
    files: Mapping[str, str] = {},
    version: str = "1.0",
    requires: Sequence[str] = ("core-app>=1.0,<2",),
) -> Path:
    """Write an installed-looking distribution into ``site``, as pip would leave it.

    ``files`` maps paths relative to ``site`` to their (dedented) source; ``plugins``
    maps entry-point names of ``core_app.plugins`` to their targets. Put ``site`` on
    ``sys.path`` or PYTHONPATH and ``importlib.metadata`` finds the plugins, so nothing
    has to be pip-installed for a test. Returns ``site``.
    """
    for relative, source in files.items():
        path = site / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = site / f"{re.sub(r'[-_.]+', '_', distribution)}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {distribution}",
        f"Version: {version}",
        *(f"Requires-Dist: {line}" for line in requires),
    ]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    entry_points = ["[core_app.plugins]", *(f"{k} = {v}" for k, v in plugins.items())]
    (info / "entry_points.txt").write_text("\n".join(entry_points) + "\n")
    return site
