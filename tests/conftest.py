"""Shared fixtures of the host's tests; fake distributions live in tests/fakes.py.

``app``, ``client`` and ``runner`` are the Flask tutorial's names for the shipped
``core_app_app``, ``core_app_client`` and ``core_app_runner`` (core_app.testing): this
suite runs without pytest-flask, so the short names are free here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from core_app.discovery import rescan

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # --import-mode=importlib: make `import fakes` work
    sys.path.append(str(HERE))

from fakes import FakeDist, make_plugin_dist  # noqa: E402


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeDist]]:
    """Make fake installed plugin distributions (see fakes.make_plugin_dist).

    Each lands in a folder of its own on sys.path; the entry-point scan is forgotten so
    the next create_app sees it. Afterwards the fake modules leave sys.modules and the
    scan is forgotten again, so no other test sees them.
    """
    root = tmp_path / "site-packages"

    def make(name: str, module_source: str = "", **kwargs: Any) -> FakeDist:
        dist = make_plugin_dist(root, name, module_source, **kwargs)
        monkeypatch.syspath_prepend(str(dist.path))
        rescan()
        return dist

    yield make
    for module_name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None) or ""
        if filename.startswith(str(root)):
            del sys.modules[module_name]
    rescan()


@pytest.fixture
def app(core_app_app: Flask) -> Flask:
    return core_app_app


@pytest.fixture
def client(core_app_client: FlaskClient) -> FlaskClient:
    return core_app_client


@pytest.fixture
def runner(core_app_runner: FlaskCliRunner) -> FlaskCliRunner:
    return core_app_runner
