"""``python run.py new-plugin NAME``: write a new plugin distribution that works as is.

The result is installable with its test tools (``pip install -e 'plugins/NAME[test]'``),
serves a route, has a task on its own queue, and its tests pass out of the box with the
fixtures core_app ships (``python -m pytest plugins/NAME``, in the environment the host
is installed in). A name that an installed plugin, distribution or package already
uses is refused: installing the new one would replace it.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from string import Template

import importlib_metadata

from .discovery import host_version, installed_plugins
from .errors import ConfigError

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "core-app-$dashed"
version = "0.1.0"
description = "The $name plugin for core_app."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["core-app>=$major.0,<$next_major", "pydantic>=2.7,<3"]

[project.optional-dependencies]
test = ["pytest>=8"]

[project.entry-points."core_app.plugins"]
$name = "$package"

[tool.setuptools]
packages = ["$package"]

[tool.setuptools.package-data]
$package = ["migrations/*.py"]

[tool.pytest.ini_options]
addopts = "--import-mode=importlib"
"""

_INIT = '''\
"""Hook implementations of the $name plugin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask
from sqlalchemy import MetaData

from core_app import hookimpl


@hookimpl
def core_app_config_defaults() -> Mapping[str, Any]:
    # Each key becomes ${upper}_<KEY>; the host's config and CORE_APP_${upper}_<KEY> override it.
    return {"GREETING": "Hello from $name"}


@hookimpl
def core_app_blueprint(app: Flask) -> Blueprint:
    from .views import blueprint

    return blueprint


@hookimpl
def core_app_models() -> MetaData:
    # The tables in models.py; their migrations are in migrations/ (python -m core_app
    # db revision $name -m "..." writes the next one from the models).
    from .models import Base

    return Base.metadata
'''

_MODELS = '''\
"""Tables of the $name plugin: every one is named ${name}_<name>."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core_app.db import plugin_metadata


class Base(DeclarativeBase):
    metadata = plugin_metadata()


class Note(Base):
    __tablename__ = "${name}_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(200))
'''

_FIRST_MIGRATION = '''\
"""The $name plugin's first tables.

Revision ID: ${name}_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "${name}_0001"
down_revision = None
branch_labels = ("$name",)  # the plugin's branch
depends_on = None


def upgrade() -> None:
    op.create_table(
        "${name}_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_${name}_notes")),
    )


def downgrade() -> None:
    op.drop_table("${name}_notes")
'''

_CONSTANTS = '''\
"""Names shared by the $name plugin's views and tasks."""

URL_PREFIX = "/api/$name"
ECHO_TASK = "$name.echo"
'''

_ENUMS = '''\
"""Enumerations of the $name plugin."""

from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
'''

_SCHEMAS = '''\
"""What the $name plugin's routes accept and answer: declared with ``@schema`` in
views.py, they validate each request (400 before the view runs) and appear in the API
document (GET /openapi.json)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .enums import Status


class Greeting(BaseModel):
    status: Status
    message: str


class Echo(BaseModel):
    text: str = Field(min_length=1, max_length=200, description="Any short text.")
'''

_VIEWS = '''\
"""Routes of the $name plugin, under /api/$name."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from core_app import schema

from .constants import URL_PREFIX
from .enums import Status
from .schemas import Echo, Greeting

blueprint = Blueprint("$name", __name__, url_prefix=URL_PREFIX)


@blueprint.get("/home")
@schema(responses={200: Greeting})
def home() -> dict[str, Any]:
    """The plugin's greeting (${upper}_GREETING)."""
    return {"status": Status.OK, "message": current_app.config["${upper}_GREETING"]}


@blueprint.post("/echo")
@schema(body=Echo, responses={200: Echo})
def echo(body: Echo) -> dict[str, Any]:
    """The text it is sent; a body that is not an Echo answers 400 before this runs."""
    return body.model_dump()
'''

_TASKS = '''\
"""Celery tasks of the $name plugin (queue '$name'): run them with
``python -m core_app worker $name`` (``python run.py worker $name`` beside a run.py)."""

from __future__ import annotations

from celery import shared_task

from .constants import ECHO_TASK


@shared_task(name=ECHO_TASK)
def echo(value: str) -> str:
    return value
'''

_TESTS = '''\
"""Tests of the $name plugin, with the fixtures core_app ships (pytest plugin)."""

from __future__ import annotations

import pytest

from core_app import send_task


@pytest.fixture
def core_app_plugins():
    return ["$name"]


def test_home(core_app_client):
    response = core_app_client.get("/api/$name/home")
    assert response.status_code == 200
    assert response.get_json()["message"] == "Hello from $name"


def test_echo_validates_its_body_before_the_view(core_app_client):
    response = core_app_client.post("/api/$name/echo", json={"text": ""})
    assert response.status_code == 400
    assert set(response.get_json()["fields"]) == {"text"}
    assert core_app_client.post("/api/$name/echo", json={"text": "hi"}).get_json() == {
        "text": "hi"
    }


def test_the_api_document_describes_echo(core_app_client):
    document = core_app_client.get("/openapi.json").get_json()
    operation = document["paths"]["/api/$name/echo"]["post"]
    assert operation["tags"] == ["$name"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$$ref": "#/components/schemas/$name.Echo"}


def test_echo_task_runs_on_a_real_worker(redis_app, core_app_worker):
    with redis_app.app_context():
        result = send_task("$name.echo", args=["ping"])
        assert result.get(timeout=30) == "ping"
'''

_README = """\
# core-app-$dashed

The $name plugin for core_app.

    pip install -e '.[test]'          # the plugin, and pytest for its tests
    python -m pytest                  # the worker test needs redis-server installed
    python -m core_app plugins        # $name is listed, loaded, at /api/$name
    python -m core_app                # serve: GET http://127.0.0.1:5000/api/$name/home
                                      # its API: /openapi.json, and the page /docs
    python -m core_app worker $name   # a worker for this plugin's tasks

`core-app` is the same command as `python -m core_app`; beside a host's `run.py`,
`python run.py ...` takes the same commands on that app.
"""


def next_step(root: Path) -> str:
    """The commands that install the new plugin with its test tools and run its tests,
    with the interpreter of the environment (so pytest is that environment's)."""
    install = shlex.quote(f"{root}[test]")
    return f"pip install -e {install} && python -m pytest {shlex.quote(str(root))}"


def check_name_is_free(name: str) -> None:
    """Refuse a name that an installed plugin, distribution or package already uses."""
    dist_name = f"core-app-{name.replace('_', '-')}"
    for source in installed_plugins():
        if source.name == name or _normal(source.distribution or "") == _normal(dist_name):
            origin = f"{source.distribution or 'no distribution'} {source.version or ''}".strip()
            raise ConfigError(
                f"{name!r} is taken: the installed plugin {source.name!r} ({origin}) uses "
                f"this name. Installing the new plugin would replace it; choose another name."
            )
    try:
        found = importlib_metadata.distribution(dist_name)
    except importlib_metadata.PackageNotFoundError:
        pass
    else:
        raise ConfigError(
            f"{name!r} is taken: the distribution {found.metadata['Name']} "
            f"{found.version} is installed. Choose another name."
        )
    if importlib.util.find_spec(f"core_app_{name}") is not None:
        raise ConfigError(
            f"{name!r} is taken: a package core_app_{name} is importable already. "
            "Choose another name."
        )


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def write_plugin(name: str, directory: Path) -> Path:
    """Write the plugin distribution ``directory/name`` and return its path."""
    if not name.isidentifier() or not name.islower():
        raise ConfigError(f"{name!r} is not a valid plugin name: use a lower-case identifier.")
    check_name_is_free(name)
    root = directory / name
    if root.exists():
        raise ConfigError(f"{root} exists already; choose another name or folder.")
    major = int(host_version().split(".")[0])
    values = {
        "name": name,
        "dashed": name.replace("_", "-"),
        "package": f"core_app_{name}",
        "upper": name.upper(),
        "major": str(major),
        "next_major": str(major + 1),
    }
    package = root / values["package"]
    files = {
        root / "pyproject.toml": _PYPROJECT,
        root / "README.md": _README,
        package / "__init__.py": _INIT,
        package / "constants.py": _CONSTANTS,
        package / "enums.py": _ENUMS,
        package / "schemas.py": _SCHEMAS,
        package / "views.py": _VIEWS,
        package / "tasks.py": _TASKS,
        package / "models.py": _MODELS,
        package / "migrations" / f"{name}_0001_first_tables.py": _FIRST_MIGRATION,
        root / "tests" / f"test_{name}.py": _TESTS,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(values))
    return root
