"""SQLite storage in the instance folder: one connection per request."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from flask import current_app, g

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS purchases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users (id),
    item TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    price_cents INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
"""


def database_path() -> Path:
    return Path(current_app.instance_path) / current_app.config["SHOP_DATABASE"]


def connect() -> sqlite3.Connection:
    connection = sqlite3.connect(database_path(), timeout=10)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA foreign_keys = ON")
    connection.executescript(SCHEMA)
    return connection


def get_db() -> sqlite3.Connection:
    """The request's connection, opened on first use and closed at teardown."""
    if "shop_db" not in g:
        g.shop_db = connect()
    return g.shop_db  # type: ignore[no-any-return]


def close_db(exc: BaseException | None = None) -> None:
    connection = g.pop("shop_db", None)
    if connection is not None:
        connection.close()


def check_database() -> None:
    """Readiness: the database file can be opened and queried."""
    with connect() as connection:
        connection.execute("SELECT 1").fetchone()
