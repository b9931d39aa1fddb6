"""Fake installed plugin distributions and the sources of their plugin modules.

A fake distribution is what pip would leave behind, minus pip (written by
:func:`core_app.testing.write_plugin_dist`): a ``*.dist-info`` directory beside the
plugin's module, in a folder of its own that the ``fake_dist`` fixture (conftest.py)
puts on ``sys.path``.
``importlib_metadata`` finds it exactly as it finds a real installation, so
``core_app.discovery.installed_plugins()`` sees it after ``rescan()``.
"""

from __future__ import annotations

import itertools
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def needs_source(dependencies: Mapping[str, str]) -> str:
    """Module source of a ``core_app_dependencies`` returning ``dependencies``."""
    return f"""
    @hookimpl
    def core_app_dependencies():
        return {dict(dependencies)!r}
    """


def ready_recorder_source(name: str) -> str:
    """Module source whose ``core_app_ready`` appends ``name`` to
    ``app.extensions["ready_calls"]``: the order plugins were told the app is ready."""
    return f"""
    @hookimpl
    def core_app_ready(app):
        app.extensions.setdefault("ready_calls", []).append({name!r})
    """
