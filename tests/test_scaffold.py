"""``python run.py new-plugin NAME``: a new plugin that installs, serves and passes its
own tests as written, in a fresh virtualenv, with no host file changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

import core_app
from core_app.discovery import host_version
from core_app.testing import child_venv

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CORE_APP_", "FLASK_", "WERKZEUG_", "PYTEST_"))
        and key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["CORE_APP_INSTANCE_PATH"] = str(tmp_path / "instance")
    env.update(settings)
    return env


def _run(command, env, *, cwd=REPO, timeout=120, check=True):
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


def _new_plugin(tmp_path: Path, name: str, directory: Path, *, check: bool = True):
    return _run(
        [sys.executable, "run.py", "new-plugin", name, "--dir", directory],
        _env(tmp_path),
        check=check,
    )


def test_new_plugin_writes_an_installable_distribution(tmp_path):
    target = tmp_path / "plugins"
    result = _new_plugin(tmp_path, "billing", target)
    root = target / "billing"
    assert str(root) in result.stdout

    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    project = pyproject["project"]
    assert project["name"] == "core-app-billing"
    entry_points = project["entry-points"]["core_app.plugins"]
    assert entry_points == {"billing": "core_app_billing"}
    (requirement,) = [d for d in project["dependencies"] if d.startswith("core-app")]
    specifier = SpecifierSet(requirement.removeprefix("core-app"))
    assert host_version() in specifier, requirement
    assert "2.0" not in specifier and "0.9" not in specifier, requirement  # a range, not >=

    package = root / "core_app_billing"
    for module in ("__init__.py", "views.py", "tasks.py", "enums.py", "constants.py"):
        assert (package / module).is_file(), module
    init = (package / "__init__.py").read_text()
    assert "@hookimpl" in init and "def core_app_blueprint(" in init
    assert "def core_app_config_defaults(" in init
    assert "url_prefix=URL_PREFIX" in (package / "views.py").read_text()
    assert '"/api/billing"' in (package / "constants.py").read_text()
    assert "@shared_task(name=ECHO_TASK)" in (package / "tasks.py").read_text()
    assert '"billing.echo"' in (package / "constants.py").read_text()
    tests = list((root / "tests").glob("test_*.py"))
    assert [t.name for t in tests] == ["test_billing.py"]
    assert "celery_worker" in tests[0].read_text()
    assert "billing" in (root / "README.md").read_text()
    for path in root.rglob("*.py"):  # every generated module compiles
        compile(path.read_text(), str(path), "exec")


@pytest.mark.parametrize("name", ["Billing", "my-plugin", "1st", "has space", "class x"])
def test_new_plugin_refuses_an_invalid_name(tmp_path, name):
    result = _new_plugin(tmp_path, name, tmp_path / "plugins", check=False)
    assert result.returncode != 0
    assert "Error:" in result.stderr and "not a valid plugin name" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "plugins" / name).exists()


def test_new_plugin_refuses_an_existing_folder(tmp_path):
    target = tmp_path / "plugins"
    (target / "billing").mkdir(parents=True)
    (target / "billing" / "mine.txt").write_text("keep me")
    result = _new_plugin(tmp_path, "billing", target, check=False)
    assert result.returncode != 0
    assert "Error:" in result.stderr and "exists already" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in (target / "billing").iterdir()] == ["mine.txt"]


def test_from_new_plugin_to_passing_tests_in_a_fresh_virtualenv(tmp_path, capsys):
    """The whole path of a plugin author: scaffold, install, test, list."""
    started = time.monotonic()
    target = tmp_path / "plugins"
    _new_plugin(tmp_path, "billing", target)
    root = target / "billing"

    # The host and its dependencies come from the environment running this test (a tox
    # env, say: not the base interpreter's site-packages); the plugin is installed into
    # the new virtualenv only.
    env = _env(tmp_path)
    python = child_venv(tmp_path / "venv", with_pip=True)
    seen = _run([python, "-c", "import core_app; print(core_app.__file__)"], env)
    assert seen.stdout.strip() == core_app.__file__
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", root], env, timeout=180)
    installed = time.monotonic()

    tests = _run(
        [python, "-m", "pytest", root, "-q", "-p", "no:cacheprovider"],
        env,
        cwd=tmp_path,
        check=False,
        timeout=180,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout, tests.stdout
    passed = time.monotonic()

    listing = _run(
        [python, "run.py", "plugins", "--json"], _env(tmp_path, CORE_APP_PLUGINS="billing")
    )
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    billing = rows["billing"]
    assert billing["status"] == "loaded", billing
    assert billing["distribution"] == "core-app-billing"
    assert billing["version"] == "0.1.0"
    assert billing["url_prefix"] == "/api/billing"
    assert billing["routes"] == 1
    assert billing["tasks"] == ["billing.echo"] and billing["queue"] == "billing"

    # The outer interpreter does not see it: nothing was installed outside the venv.
    outside = _run([sys.executable, "run.py", "plugins", "--json"], _env(tmp_path))
    assert "billing" not in {row["name"] for row in json.loads(outside.stdout)}

    with capsys.disabled():  # shown without -s too
        print(
            f"\nnew-plugin -> passing pytest: {passed - started:.1f} s "
            f"(scaffold + virtualenv + pip install {installed - started:.1f} s, "
            f"pytest {passed - installed:.1f} s)"
        )
