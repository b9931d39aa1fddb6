"""Fake plugins with tables and migrations, and running ``python -m core_app db ...``.

A data plugin is a fake distribution (tests/fakes.py) whose module declares Core tables
on a ``plugin_metadata()`` and whose ``migrations/`` folder (beside the module, the
host's default place) holds the revisions given.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, text

from core_app.testing import clean_env, run_command

REPO = Path(__file__).resolve().parents[1]


def models_source(
    tables: Mapping[str, str], dependencies: Mapping[str, str] | None = None, extra: str = ""
) -> str:
    """A plugin module declaring ``tables`` (name -> extra Column source lines)."""
    declared = "".join(
        f"Table({name!r}, metadata, Column('id', Integer, primary_key=True){columns})\n"
        for name, columns in tables.items()
    )
    deps = (
        f"\n@hookimpl\ndef core_app_dependencies():\n    return {dict(dependencies)!r}\n"
        if dependencies
        else ""
    )
    return (
        "from sqlalchemy import Column, ForeignKey, Integer, String, Table\n"
        "from core_app import hookimpl\n"
        "from core_app.db import plugin_metadata\n\n"
        "metadata = plugin_metadata()\n"
        f"{declared}\n"
        "@hookimpl\ndef core_app_models():\n    return metadata\n"
        f"{deps}{extra}"
    )


def revision(plugin: str, rev: str, down: str | None, upgrade: str, downgrade: str = "pass") -> str:
    """The source of one revision; the first of a plugin carries its branch label."""
    labels = f"({plugin!r},)" if down is None else "()"
    return (
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = {rev!r}\ndown_revision = {down!r}\nbranch_labels = {labels}\n"
        "depends_on = None\n\n\n"
        f"def upgrade():\n{textwrap.indent(textwrap.dedent(upgrade).strip(), '    ')}\n\n\n"
        f"def downgrade():\n{textwrap.indent(textwrap.dedent(downgrade).strip(), '    ')}\n"
    )


def create_table(table: str, *columns: str) -> str:
    cols = "".join(f", {c}" for c in columns)
    return f"op.create_table({table!r}, sa.Column('id', sa.Integer(), primary_key=True){cols})"


def data_plugin(
    fake_dist: Callable[..., Any],
    name: str,
    tables: Mapping[str, str],
    revisions: Sequence[str],
    dependencies: Mapping[str, str] | None = None,
) -> Any:
    """Install a fake plugin with these tables and revisions (``<name>_000N.py``)."""
    files = {f"migrations/{name}_{i:04d}.py": src for i, src in enumerate(revisions, start=1)}
    return fake_dist(name, models_source(tables, dependencies), files=files)


def tables_of(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def columns_of(url: str, table: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [c["name"] for c in inspect(connection).get_columns(table)]
    finally:
        engine.dispose()


def scalar(url: str, sql: str) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def core_app_db(
    args: Sequence[str], url: str, instance: Path, paths: Sequence[Path] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m core_app db ARGS`` with only these plugins' folders added to the path."""
    environ = clean_env(
        paths,
        CORE_APP_DATABASE_URL=url,
        CORE_APP_INSTANCE_PATH=str(instance),
        CORE_APP_DISCOVERY_CACHE="false",
        **env,
    )
    return run_command([sys.executable, "-m", "core_app", "db", *args], environ, cwd=REPO)
