"""Process roles: each process imports only the plugins its job needs, decided by the
command line before the app is built; commands that need no app build none."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery
from fakes import blueprint_source, config
from procs import REPO, clean_env, production_env, run_py, worker, write_plugin_dist

from core_app import create_app
from core_app.roles import BEAT, Role

#: A plugin package whose every import leaves a line "<module> <pid>" in MARKER.
PLUGIN_INIT = """
import os
from flask import Blueprint
from core_app import hookimpl

with open(os.environ["MARKER"], "a") as out:
    out.write(f"{__name__} {os.getpid()}\\n")

blueprint = Blueprint("NAME", __name__, url_prefix="/api/NAME")


@blueprint.get("/ping")
def ping():
    return {"plugin": "NAME"}


@hookimpl
def core_app_blueprint(app):
    return blueprint


@hookimpl
def core_app_dependencies():
    return DEPENDENCIES
"""

PLUGIN_TASKS = """
import os
import sys
from celery import shared_task

with open(os.environ["MARKER"], "a") as out:
    out.write(f"{__name__} {os.getpid()}\\n")


@shared_task(name="NAME.probe")
def probe():
    plugins = ("alpha", "beta", "gamma", "delta")
    return {
        "pid": os.getpid(),
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in plugins),
    }
"""


def _plugin(root: Path, name: str, depends_on: dict[str, str] | None = None) -> Path:
    init = PLUGIN_INIT.replace("NAME", name).replace("DEPENDENCIES", repr(depends_on or {}))
    return write_plugin_dist(
        root, name, {"__init__.py": init, "tasks.py": PLUGIN_TASKS.replace("NAME", name)}
    )


@pytest.fixture
def abc(tmp_path: Path) -> dict[str, str]:
    """Plugins alpha, beta, gamma (and delta, which needs alpha) installed and enabled."""
    root = tmp_path / "site"
    for name in ("alpha", "beta", "gamma"):
        _plugin(root, name)
    _plugin(root, "delta", {"alpha": ">=1.0"})
    return {
        "PYTHONPATH": str(root),
        "MARKER": str(tmp_path / "imports.txt"),
        "CORE_APP_INSTANCE_PATH": str(tmp_path / "instance"),
        "CORE_APP_PLUGINS": "alpha,beta,gamma,delta",
    }


def _imports(env: dict[str, str]) -> list[tuple[str, int]]:
    marker = Path(env["MARKER"])
    lines = marker.read_text().split() if marker.exists() else []
    return [(lines[i], int(lines[i + 1])) for i in range(0, len(lines), 2)]


def _probe(redis_url: str, plugin: str) -> dict[str, object]:
    client = Celery(broker=redis_url, backend=redis_url)
    try:
        result = client.send_task(f"{plugin}.probe", queue=plugin)
        return dict(result.get(timeout=30))
    finally:
        client.close()


def test_a_worker_for_one_plugin_never_imports_the_others(abc, redis_url, tmp_path):
    """With alpha, beta and gamma enabled, `python run.py worker alpha` imports alpha and
    nothing of beta or gamma: not in its main process, not in its pool children."""
    env = clean_env(CORE_APP_BROKER_URL=redis_url, **abc)
    proc = worker("alpha", env, tmp_path / "alpha.log", "--concurrency", "2", "--pool", "prefork")
    try:
        seen = [_probe(redis_url, "alpha") for _ in range(4)]
    finally:
        proc.stop()
    child_pids = {report["pid"] for report in seen}
    assert proc.pid not in child_pids, "the probe ran in a pool child"
    for report in seen:
        assert report["modules"] == ["alpha", "alpha.tasks"], report
    imports = _imports(abc)
    assert sorted(module for module, _ in imports) == ["alpha", "alpha.tasks"], imports
    assert {pid for _, pid in imports} == {proc.pid}, "one build, in one process (no re-exec)"
    assert proc.output().count("alpha@") >= 1 and "beta" not in proc.output()


def test_a_worker_imports_what_its_plugin_depends_on_but_not_its_tasks(abc, redis_url, tmp_path):
    env = clean_env(CORE_APP_BROKER_URL=redis_url, **abc)
    proc = worker("delta", env, tmp_path / "delta.log")
    try:
        report = _probe(redis_url, "delta")
    finally:
        proc.stop()
    assert report["modules"] == ["alpha", "delta", "delta.tasks"]
    assert sorted({module for module, _ in _imports(abc)}) == ["alpha", "delta", "delta.tasks"]


@pytest.fixture
def with_broken(abc, tmp_path) -> dict[str, str]:
    """abc, plus an enabled plugin whose import raises."""
    broken = tmp_path / "broken-site"
    write_plugin_dist(broken, "broken", {"__init__.py": "raise RuntimeError('kaboom')\n"})
    return {
        **abc,
        "PYTHONPATH": os.pathsep.join([abc["PYTHONPATH"], str(broken)]),
        "CORE_APP_PLUGINS": "alpha,beta,gamma,broken",
    }


def test_in_production_a_worker_is_judged_by_its_own_plugins_only(with_broken, redis_url, tmp_path):
    env = production_env(CORE_APP_BROKER_URL=redis_url, **with_broken)
    proc = worker("alpha", env, tmp_path / "alpha.log")
    try:
        assert _probe(redis_url, "alpha")["modules"] == ["alpha", "alpha.tasks"]
    finally:
        proc.stop()

    refused = subprocess.run(
        run_py("worker", "broken"), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("core_app refused to start.\n\n")
    assert "Plugin 'broken' (distribution broken 1.0)" in refused.stderr
    assert "kaboom" in refused.stderr and "Traceback" not in refused.stderr

    web = subprocess.run(
        run_py("routes"), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert web.returncode == 1 and "Plugin 'broken'" in web.stderr, "the web judges them all"


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["worker", "--help"], ["new-plugin", "--help"]],
    ids=" ".join,
)
def test_commands_that_need_no_app_work_whatever_state_the_plugins_are_in(
    with_broken, redis_url, args
):
    env = production_env(CORE_APP_BROKER_URL=redis_url, **with_broken)
    done = subprocess.run(
        run_py(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert _imports(with_broken) == [], "no plugin was imported"
    if args == ["--help"]:
        for name in ("alpha", "beta", "gamma", "broken", "worker", "beat", "plugins"):
            assert f"  {name} " in done.stdout, name
        assert "--app" not in done.stdout and "--env-file" not in done.stdout
    if args == ["--version"]:
        assert "core-app 1.0.0" in done.stdout and "plugin broken: broken 1.0" in done.stdout


def test_new_plugin_works_whatever_state_the_plugins_are_in(with_broken, redis_url, tmp_path):
    env = production_env(CORE_APP_BROKER_URL=redis_url, **with_broken)
    done = subprocess.run(
        run_py("new-plugin", "billing", "--dir", str(tmp_path / "new")),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "new" / "billing" / "pyproject.toml").is_file()
    assert _imports(with_broken) == []


def test_a_plugin_command_group_loads_that_plugin_only(abc, tmp_path):
    done = subprocess.run(
        run_py("beta", "--help"), cwd=REPO, env=clean_env(**abc), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Commands of the beta plugin." in done.stdout
    assert sorted({module for module, _ in _imports(abc)}) == ["beta", "beta.tasks"]


def test_python_m_core_app_runs_the_same_commands_without_run_py(abc, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "core_app", "plugins", "--json"],
        cwd=tmp_path,
        env=clean_env(**abc),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert '"name": "gamma"' in done.stdout


def test_beat_loads_every_schedule_but_no_task_module(fake_dist, tmp_path):
    body = """
    @hookimpl
    def core_app_beat_schedule():
        return {"tick": {"task": "timed.tick", "schedule": 60.0}}


    @hookimpl
    def core_app_task_modules():
        return ["timed_beat_tasks"]
    """
    tasks = (
        "from celery import shared_task\n\n@shared_task(name='timed.tick')\ndef tick():\n    pass\n"
    )
    fake_dist("timed", blueprint_source("timed", body=body), files={"timed_beat_tasks.py": tasks})
    app = create_app(config(tmp_path, ["timed"]), role=Role(BEAT))
    assert "timed_beat_tasks" not in sys.modules
    assert app.extensions["celery"].conf.beat_schedule == {
        "timed.tick": {"task": "timed.tick", "schedule": 60.0}
    }
    assert "timed.tick" not in app.extensions["celery"].tasks
    assert not [r for r in app.url_map.iter_rules() if r.rule.startswith("/api/timed")]

    web = create_app(config(tmp_path, ["timed"]))
    assert "timed_beat_tasks" in sys.modules and "timed.tick" in web.extensions["celery"].tasks
    sys.modules.pop("timed_beat_tasks")


@pytest.mark.parametrize("flags", [["--debugger"], ["--debug"]], ids=" ".join)
def test_production_never_serves_the_werkzeug_debugger_through_flask_run(
    redis_url, tmp_path, flags
):
    env = clean_env(
        CORE_APP_ENV="production",
        CORE_APP_SECRET_KEY=secrets.token_hex(),
        CORE_APP_BROKER_URL=redis_url,
        CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "run", "run", *flags, "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a server that started would run until this expires and fail the test
    )
    assert done.returncode == 1
    assert "core_app refused to start." in done.stderr
    assert "never runs the debugger" in done.stderr
    assert "Running on" not in done.stderr + done.stdout
    assert "Debugger PIN" not in done.stderr + done.stdout
