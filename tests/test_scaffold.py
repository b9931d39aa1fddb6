"""``python run.py new-plugin NAME``: what it writes, and what it refuses (invalid names,
existing folders, names installed plugins use). That the result installs and passes its
own tests as the printed Next line says, in a fresh virtualenv, is tests/test_quickstart.py.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
from fakes import make_plugin_dist
from packaging.specifiers import SpecifierSet

from core_app.discovery import host_version
from core_app.testing import clean_env, run_command

REPO = Path(__file__).resolve().parents[1]


def _new_plugin(tmp_path: Path, name: str, directory: Path, paths: Sequence[Path] = ()):
    """``python run.py new-plugin`` as a user runs it (``paths``: more installed plugins)."""
    env = clean_env(paths, CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"))
    command = [sys.executable, "run.py", "new-plugin", name, "--dir", str(directory)]
    return run_command(command, env, cwd=REPO)


def test_new_plugin_writes_an_installable_distribution(tmp_path):
    target = tmp_path / "plugins"
    result = _new_plugin(tmp_path, "billing", target)
    assert result.returncode == 0, result.stderr
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
    for module in ("__init__.py", "views.py", "schemas.py", "tasks.py", "enums.py", "constants.py"):
        assert (package / module).is_file(), module
    init = (package / "__init__.py").read_text()
    assert "@hookimpl" in init and "def core_app_blueprint(" in init
    assert "def core_app_config_defaults(" in init
    assert "url_prefix=URL_PREFIX" in (package / "views.py").read_text()
    assert '"/api/billing"' in (package / "constants.py").read_text()
    assert "@shared_task(name=ECHO_TASK)" in (package / "tasks.py").read_text()
    assert '"billing.echo"' in (package / "constants.py").read_text()
    assert project["optional-dependencies"]["test"] == ["pytest>=8"]
    assert result.stdout.strip().endswith(
        f"Next: pip install -e '{root}[test]' && python -m pytest {root}"
    ), result.stdout
    readme = (root / "README.md").read_text()
    assert "python -m pytest" in readme and "python -m core_app worker billing" in readme
    assert "run.py" not in (package / "tasks.py").read_text().split("``python -m")[0]
    tests = list((root / "tests").glob("test_*.py"))
    assert [t.name for t in tests] == ["test_billing.py"]
    assert "core_app_worker" in tests[0].read_text()
    assert "billing" in (root / "README.md").read_text()
    for path in root.rglob("*.py"):  # every generated module compiles
        compile(path.read_text(), str(path), "exec")


def test_the_new_plugins_route_appears_in_the_api_document_with_its_schema(tmp_path, monkeypatch):
    from openapi_spec_validator import validate

    from core_app import create_app
    from core_app.scaffold import write_plugin

    root = write_plugin("billing", tmp_path / "plugins")
    monkeypatch.syspath_prepend(str(root))
    import core_app_billing

    try:
        app = create_app(
            {"INSTANCE_PATH": str(tmp_path / "instance"), "PLUGINS": ["billing"]},
            plugins={"billing": core_app_billing},
        )
        client = app.test_client()
        document = client.get("/openapi.json").get_json()
    finally:
        for module in [m for m in sys.modules if m.startswith("core_app_billing")]:
            del sys.modules[module]
    validate(document)
    echo = document["paths"]["/api/billing/echo"]["post"]
    assert echo["tags"] == ["billing"]
    assert echo["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/billing.Echo"
    }
    assert document["components"]["schemas"]["billing.Echo"]["properties"]["text"]["maxLength"]
    home = document["paths"]["/api/billing/home"]["get"]
    assert home["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/billing.Greeting"
    }
    refused = client.post("/api/billing/echo", json={"text": ""})
    assert refused.status_code == 400 and set(refused.get_json()["fields"]) == {"text"}


@pytest.mark.parametrize("name", ["Billing", "my-plugin", "1st", "has space", "class x"])
def test_new_plugin_refuses_an_invalid_name(tmp_path, name):
    result = _new_plugin(tmp_path, name, tmp_path / "plugins")
    assert result.returncode != 0
    assert "Error:" in result.stderr and "not a valid plugin name" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "plugins" / name).exists()


def test_new_plugin_refuses_an_existing_folder(tmp_path):
    target = tmp_path / "plugins"
    (target / "billing").mkdir(parents=True)
    (target / "billing" / "mine.txt").write_text("keep me")
    result = _new_plugin(tmp_path, "billing", target)
    assert result.returncode != 0
    assert "Error:" in result.stderr and "exists already" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in (target / "billing").iterdir()] == ["mine.txt"]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("shop", "the installed plugin 'shop' (core-app-shop 1.0.0)"),
        ("notifications", "the installed plugin 'notifications' (core-app-notifications"),
        ("ledger", "the installed plugin 'books' (core-app-ledger 2.0)"),
        ("stray", "the distribution core-app-stray 0.3 is installed"),
        ("pkg", "a package core_app_pkg is importable already"),
    ],
    ids=[
        "plugin name",
        "another plugin name",
        "distribution of a plugin",
        "distribution",
        "package",
    ],
)
def test_new_plugin_refuses_a_name_that_is_installed_already(tmp_path, name, says):
    """Following the Next line would replace the installed plugin, distribution or package."""
    site = tmp_path / "site"
    make_plugin_dist(site, "books", dist_name="core-app-ledger", version="2.0")
    stray = site / "core_app_stray-0.3.dist-info"
    stray.mkdir(parents=True)
    (stray / "METADATA").write_text("Metadata-Version: 2.1\nName: core-app-stray\nVersion: 0.3\n")
    (site / "core_app_pkg").mkdir()
    (site / "core_app_pkg" / "__init__.py").write_text("")
    paths = [*(p for p in site.iterdir() if p.is_dir()), site]
    target = tmp_path / "scratch"
    result = _new_plugin(tmp_path, name, target, paths)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"Error: {name!r} is taken: "), result.stderr
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not target.exists()
