"""The one Alembic environment of every plugin: the host runs it (core_app.migrations)."""

from alembic import context

from core_app.migrations import run_env

run_env(context)
