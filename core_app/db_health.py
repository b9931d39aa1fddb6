"""Readiness checks of the database: it answers, and every plugin's tables are at head."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import text

from .db import current_database
from .migrations import pending


def check_database() -> None:
    """The database answers a query."""
    with current_database().engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def check_migrations() -> None:
    """Every plugin with migrations is at its heads (else: run ``db upgrade``)."""
    behind = pending(current_app)
    if behind:
        listed = "; ".join(f"{plugin} {where}" for plugin, where in sorted(behind.items()))
        raise RuntimeError(f"not at head: {listed} (run `python run.py db upgrade`)")
