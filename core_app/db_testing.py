"""Database fixtures of the pytest plugin: the same test on SQLite and on PostgreSQL.

``database_url`` is parametrised: a test that asks for it runs twice, once on a fresh
SQLite file and once on an emptied PostgreSQL database. PostgreSQL is the machine's
server when ``CORE_APP_TEST_DATABASE_URL`` names one (``postgresql://postgres@127.0.0.1/
postgres``: a throwaway database is created on it for the test run and dropped after),
else a private cluster of the session's (:class:`core_app.servers.PostgresServer`).
``db_session`` is a session on the ``core_app_app`` fixture's database whose commits (the test's
and those of requests to the app) are rolled back after the test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from .db import current_database
from .servers import PostgresServer

TEST_DATABASE_ENV = "CORE_APP_TEST_DATABASE_URL"


def _psycopg(url: str) -> str:
    """The URL with the psycopg 3 driver (the one core_app's ``postgresql`` extra has)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """An administrative URL of a PostgreSQL server for the test session."""
    given = os.environ.get(TEST_DATABASE_ENV)
    if given:
        yield _psycopg(given)
        return
    server = PostgresServer().start()
    try:
        yield server.url()
    finally:
        server.remove()


@pytest.fixture(scope="session")
def postgres_database(postgres_server_url: str) -> Iterator[str]:
    """A database of its own for this test run, dropped at the end."""
    name = f"core_app_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(postgres_server_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def empty_postgres(url: str) -> None:
    """Drop every table of the database (its public schema, made anew)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database for this test: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite3'}"
    url: str = request.getfixturevalue("postgres_database")
    empty_postgres(url)
    return url


@pytest.fixture
def db_session(core_app_app: Flask) -> Iterator[Session]:
    """A session on ``core_app_app``'s database (migrated when the app was built), inside an
    app context; everything the test and the app's requests commit is rolled back after it."""
    with core_app_app.app_context(), current_database(core_app_app).rolled_back() as session:
        yield session
