"""The docs stay true to the code: every hook is in the reference with its signature, and
the README names every configuration key the host defines."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from core_app import hookspecs
from core_app.config import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in vars(hookspecs) if name.startswith("core_app_"))


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_in_the_reference_with_its_signature(name: str) -> None:
    reference = (ROOT / "docs" / "hooks.md").read_text()
    signature = str(inspect.signature(getattr(hookspecs, name))).replace("'", "")
    assert f"{name}{signature}" in reference


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_in_the_readme_table(name: str) -> None:
    assert f"`{name}(" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_every_setting_is_in_the_configuration_reference(key: str) -> None:
    assert f"`{key}`" in (ROOT / "README.md").read_text()
