"""Integration: ``pip install`` a plugin into a fresh virtualenv and it is mounted;
``pip uninstall`` it and it is gone. No host file changes in between."""

from __future__ import annotations

import json
import shutil
import textwrap
import tomllib
import venv
from pathlib import Path

import pytest

from core_app.testing import clean_env, run_command

ROOT = Path(__file__).resolve().parents[1]
#: The host's requirements, as pyproject.toml declares them (a copy would drift).
HOST_DEPENDENCIES = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]

#: Builds an app with every installed plugin and prints what it mounted.
PROBE = """
import json, sys
from core_app import create_app
app = create_app({"INSTANCE_PATH": sys.argv[1], "PLUGIN_ERRORS": "raise"})
host = app.extensions["core_app"]
print(json.dumps({
    "rules": sorted(rule.rule for rule in app.url_map.iter_rules()),
    "plugins": {r.name: r.as_dict() for r in host.plugins()},
    "tasks": sorted(app.extensions["celery"].tasks),
    "hello": app.test_client().get("/api/hello/greet").get_json(),
}))
"""


def _run(command, *, cwd=None, env=None, check=True, timeout=300):
    """``command`` outside this environment's settings; by default, it must succeed."""
    result = run_command(command, clean_env(**(env or {})), cwd=cwd, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _write_hello_plugin(root: Path) -> Path:
    source = root / "hello-plugin"
    package = source / "hello_plugin"
    package.mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "hello-plugin"
            version = "0.1.0"
            dependencies = ["core-app>=1.0,<2"]

            [project.entry-points."core_app.plugins"]
            hello = "hello_plugin"

            [tool.setuptools]
            packages = ["hello_plugin"]
            """
        )
    )
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """\
            from flask import Blueprint

            from core_app import hookimpl

            blueprint = Blueprint("hello", __name__, url_prefix="/api/hello")


            @blueprint.get("/greet")
            def greet():
                return {"greeting": "hello from an installed plugin"}


            @hookimpl
            def core_app_blueprint(app):
                return blueprint
            """
        )
    )
    (package / "tasks.py").write_text(
        textwrap.dedent(
            """\
            from celery import shared_task


            @shared_task(name="hello.wave")
            def wave():
                return "wave"
            """
        )
    )
    return source


def _copy_host(root: Path) -> Path:
    """The host's source, without the repo's build artefacts, so the repo stays clean."""
    copy = root / "core-app"
    shutil.copytree(
        ROOT / "core_app",
        copy / "core_app",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for path in ROOT.iterdir():
        if path.is_file():
            shutil.copy2(path, copy / path.name)
    return copy


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    """A virtualenv without system site-packages, with the host (and no plugin) in it."""
    root = tmp_path_factory.mktemp("install")
    home = root / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(home)
    python = home / "bin" / "python"
    pip = [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "install", *HOST_DEPENDENCIES])
    _run([*pip, "install", "--no-deps", str(_copy_host(root))])
    return {"root": root, "python": python, "pip": pip, "plugin": _write_hello_plugin(root)}


def _probe(environment, name):
    instance = environment["root"] / f"instance-{name}"
    result = _run([str(environment["python"]), "-c", PROBE, str(instance)], cwd=environment["root"])
    return json.loads(result.stdout)


def test_the_virtualenv_is_isolated(environment):
    result = _run(
        [
            str(environment["python"]),
            "-c",
            "import sys, importlib.util; print(sys.prefix != sys.base_prefix, "
            "importlib.util.find_spec('core_app_shop') is None)",
        ]
    )
    assert result.stdout.split() == ["True", "True"]


def test_pip_install_mounts_the_plugin_and_uninstall_removes_it(environment):
    before = _probe(environment, "before")
    assert not any(rule.startswith("/api/hello") for rule in before["rules"])
    assert "hello" not in before["plugins"]
    assert before["hello"]["status"] == 404

    _run([*environment["pip"], "install", str(environment["plugin"])])
    installed = _probe(environment, "installed")
    assert "/api/hello/greet" in installed["rules"]
    record = installed["plugins"]["hello"]
    assert record["status"] == "loaded"
    assert record["distribution"] == "hello-plugin"
    assert record["version"] == "0.1.0"
    assert record["url_prefix"] == "/api/hello"
    assert record["task_modules"] == ["hello_plugin.tasks"]
    assert record["queue"] == "hello"
    assert "hello.wave" in installed["tasks"]
    assert installed["hello"] == {"greeting": "hello from an installed plugin"}

    # The same through the command line, with the host's run.py.
    result = _run(
        [str(environment["python"]), str(ROOT / "run.py"), "plugins", "--json"],
        cwd=environment["root"],
        env={"CORE_APP_INSTANCE_PATH": str(environment["root"] / "instance-cli")},
    )
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["hello"]["status"] == "loaded" and rows["hello"]["url_prefix"] == "/api/hello"
    assert "shop" not in rows  # only what is installed in this environment

    _run([*environment["pip"], "uninstall", "--yes", "hello-plugin"])
    after = _probe(environment, "after")
    assert not any(rule.startswith("/api/hello") for rule in after["rules"])
    assert "hello" not in after["plugins"]
    assert "hello.wave" not in after["tasks"]
    assert after["rules"] == before["rules"]


def test_a_plugin_for_another_host_version_installs_but_is_refused(environment):
    source = environment["root"] / "future-plugin"
    shutil.copytree(environment["plugin"], source)
    pyproject = source / "pyproject.toml"
    text = pyproject.read_text()
    text = text.replace('name = "hello-plugin"', 'name = "future-plugin"')
    text = text.replace('hello = "hello_plugin"', 'future = "hello_plugin"')
    pyproject.write_text(text)
    _run([*environment["pip"], "install", str(source)])
    try:
        # Make the installed metadata what a release needing core-app 99 would carry.
        purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        site = _run([str(environment["python"]), "-c", purelib]).stdout.strip()
        metadata = next(Path(site).glob("future_plugin-*.dist-info")) / "METADATA"
        text = metadata.read_text()
        assert "Requires-Dist: core-app<2,>=1.0" in text or "core-app>=1.0,<2" in text, text
        text = "\n".join(
            "Requires-Dist: core-app>=99" if line.startswith("Requires-Dist: core-app") else line
            for line in text.splitlines()
        )
        metadata.write_text(text + "\n")
        result = _run(
            [str(environment["python"]), str(ROOT / "run.py"), "routes"],
            cwd=environment["root"],
            env={
                "CORE_APP_INSTANCE_PATH": str(environment["root"] / "instance-future"),
                "CORE_APP_PLUGIN_ERRORS": "raise",
            },
            check=False,
        )
        assert result.returncode == 1
        assert "core-app>=99" in result.stderr
        assert "future-plugin 0.1.0" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        _run([*environment["pip"], "uninstall", "--yes", "future-plugin"])
