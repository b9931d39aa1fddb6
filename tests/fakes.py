"""Fake installed plugin distributions, and the checks every plugin refusal must pass.

A fake distribution is what pip would leave behind, minus pip (written by
:func:`core_app.testing.write_plugin_dist`): a ``*.dist-info`` directory beside the
plugin's module, in a folder of its own that the ``fake_dist`` fixture (conftest.py)
puts on ``sys.path``.
``importlib_metadata`` finds it exactly as it finds a real installation, so
``core_app.discovery.installed_plugins()`` sees it after ``rescan()``.
"""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask

from core_app.testing import clean_env, write_plugin_dist

_serial = itertools.count(1)


@dataclass(frozen=True)
class FakeDist:
    """One fake installed distribution declaring one plugin."""

    #: The entry-point name, i.e. the plugin name.
    plugin: str
    #: The distribution name (``Name:`` in METADATA).
    name: str
    version: str
    #: The module written for the plugin (imported only when the plugin is loaded).
    module: str
    #: The folder put on sys.path.
    path: Path
    #: The entry-point value.
    target: str
    requires: tuple[str, ...] = ()

    @property
    def marker(self) -> Path:
        """A file the module of :func:`never_import_source` writes when imported."""
        return self.path / "imported.marker"


def make_plugin_dist(
    root: Path,
    name: str,
    module_source: str = "",
    *,
    dist_name: str | None = None,
    version: str = "1.0",
    requires: str | Sequence[str] | None = "core-app>=1.0,<2",
    module: str | None = None,
    target: str | None = None,
    files: Mapping[str, str] | None = None,
) -> FakeDist:
    """Write a distribution declaring the plugin ``name`` under ``root``; return it.

    :param module_source: source of the plugin's module (written as ``<module>.py``).
    :param requires: ``Requires-Dist`` lines (None: none).
    :param target: the entry-point value (``{module}`` stands for the module's name);
        defaults to the module.
    :param files: more files for the folder, by relative path.
    """
    serial = next(_serial)
    slug = re.sub(r"\W", "_", name).lower()
    dist_name = dist_name or f"core-app-fake-{slug.replace('_', '-')}-{serial}"
    module = module or f"fake_{slug}_{serial}"
    target = (target or module).replace("{module}", module)
    if isinstance(requires, str):
        requires = [requires]
    requires = tuple(requires or ())
    folder = write_plugin_dist(
        root / f"{dist_name}-{version}-{serial}",
        dist_name,
        plugins={name: target},
        files={f"{module}.py": module_source, **(files or {})},
        version=version,
        requires=requires,
    )
    return FakeDist(name, dist_name, version, module, folder, target, requires)


def blueprint_source(
    name: str,
    prefix: str | None = None,
    *,
    blueprint: str | None = None,
    body: str = "",
    hook: bool = True,
) -> str:
    """Source of a plugin module with a blueprint that answers ``GET <prefix>/ping``.

    :param prefix: the blueprint's url_prefix (default ``/api/<name>``; ``""`` for none).
    :param blueprint: the blueprint's name (default: the plugin name).
    :param body: more module source, after the blueprint is defined (dedented).
    :param hook: whether to implement ``core_app_blueprint`` returning the blueprint.
    """
    prefix = f"/api/{name}" if prefix is None else prefix
    lines = [
        "from flask import Blueprint",
        "from core_app import hookimpl",
        "",
        f"blueprint = Blueprint({blueprint or name!r}, __name__, url_prefix={prefix or None!r})",
        "",
        "",
        '@blueprint.get("/ping")',
        "def ping():",
        f"    return {{'plugin': {name!r}}}",
        "",
        "",
        textwrap.dedent(body),
    ]
    if hook:
        lines += ["", "@hookimpl", "def core_app_blueprint(app):", "    return blueprint", ""]
    return "\n".join(lines)


def never_import_source(marker: Path) -> str:
    """A plugin module that leaves a marker file and raises when it is imported."""
    return (
        f"from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        f"raise RuntimeError('this plugin must never be imported')\n"
    )


def subprocess_env(tmp_path: Path, paths: Sequence[Path] = (), **settings: str) -> dict[str, str]:
    """The environment for a ``python run.py`` subprocess: no inherited core_app setting,
    an instance folder in ``tmp_path``, fake distributions in ``paths`` on PYTHONPATH."""
    return clean_env(paths, CORE_APP_INSTANCE_PATH=str(tmp_path / "instance"), **settings)


def config(tmp_path: Path, plugins: Iterable[str] | None, **extra: Any) -> dict[str, Any]:
    """Test config with an instance folder in ``tmp_path`` and an explicit allowlist."""
    return {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "PLUGINS": None if plugins is None else list(plugins),
        **extra,
    }


# -- refusals ---------------------------------------------------------------------------


@dataclass
class Refusal:
    """A broken setup: which plugins must be refused, with which error, and who survives."""

    #: Plugins that must fail, with the distribution each comes from.
    bad: dict[str, FakeDist]
    error: type[Exception]
    #: Plugins that must keep serving: name -> URL of a route answering 200.
    survivors: dict[str, str]
    #: The allowlist (PLUGINS) for the app.
    plugins: list[str]
    #: Texts the error message must contain (besides plugin, distribution, version).
    says: list[str] = field(default_factory=list)
    #: URLs of the bad plugins' routes, which must not answer 200 in lenient mode.
    bad_urls: list[str] = field(default_factory=list)


def check_strict_refusal(refusal: Refusal, error: Exception) -> None:
    """The error create_app raised in strict mode names the plugin, its origin and a fix."""
    assert type(error) is refusal.error, f"{type(error).__name__}: {error}"
    message = str(error)
    plugin = getattr(error, "plugin", None)
    assert plugin in refusal.bad, message
    dist = refusal.bad[plugin]
    assert repr(plugin) in message
    assert dist.name in message
    assert dist.version in message
    assert "Fix:" in message
    fix = message.split("Fix:", 1)[1].strip()
    assert fix, f"the fix is empty: {message}"
    for text in refusal.says:
        assert text in message, f"{text!r} not in {message!r}"


def check_lenient_skip(refusal: Refusal, app: Flask) -> None:
    """In lenient mode the bad plugins are reported as failed and the rest serve."""
    client = app.test_client()
    for name, url in refusal.survivors.items():
        response = client.get(url)
        assert response.status_code == 200, (name, response.get_data(as_text=True))
        assert response.get_json() == {"plugin": name}
    for url in refusal.bad_urls:
        assert client.get(url).status_code != 200, url

    result = app.test_cli_runner().invoke(args=["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    for name, dist in refusal.bad.items():
        row = rows[name]
        assert row["status"] == "failed", row
        assert row["distribution"] == dist.name
        assert row["version"] == dist.version
        assert repr(name) in row["error"] and "Fix:" in row["error"], row
        for text in refusal.says:
            assert text in row["error"], (text, row["error"])
    for name in refusal.survivors:
        assert rows[name]["status"] == "loaded", rows[name]

    ready = client.get("/ready")
    assert ready.status_code == 200, ready.get_json()
    body = ready.get_json()
    failed = {entry["name"]: entry["error"] for entry in body["plugins"]["failed"]}
    assert set(refusal.bad) <= set(failed), failed
    for name in refusal.bad:
        assert failed[name] == rows[name]["error"]
    assert set(refusal.survivors) <= set(body["plugins"]["loaded"])
    assert not set(refusal.bad) & set(body["plugins"]["loaded"])
