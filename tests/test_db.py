"""The shared database: who owns which table, sessions per app context, engines per
process."""

from __future__ import annotations

import os
import textwrap

import pytest
from datakit import models_source
from fakes import config
from sqlalchemy import text

from core_app import PluginConflictError, PluginDeclarationError, create_app
from core_app.db import current_database, owner_of, session


def _app(tmp_path, plugins, **more):
    return create_app(config(tmp_path, plugins, **{"PLUGIN_ERRORS": "raise", **more}))


def test_core_app_models_a_table_two_plugins_declare_is_refused_naming_both(fake_dist, tmp_path):
    fake_dist("dup", models_source({"dup_x_items": ""}))
    fake_dist("dup_x", models_source({"dup_x_items": ""}))
    with pytest.raises(PluginConflictError) as info:
        _app(tmp_path, ["dup", "dup_x"])
    error = info.value
    print(error.message)  # the closing note shows it
    assert error.plugin == "dup" and error.other == "plugin 'dup_x'"
    assert "its table 'dup_x_items' is declared by plugin 'dup_x' too" in error.message
    assert error.distribution and error.distribution.startswith("core-app-fake-dup-")


def test_core_app_models_lenient_mode_keeps_the_rightful_owner(fake_dist, tmp_path):
    fake_dist("dup", models_source({"dup_x_items": ""}))
    fake_dist("dup_x", models_source({"dup_x_items": ""}))
    app = _app(tmp_path, ["dup", "dup_x"], PLUGIN_ERRORS="skip")
    host = app.extensions["core_app"]
    assert host.records["dup"].failed and not host.records["dup_x"].failed
    assert current_database(app).owners == {
        "core_app_outbox": "core_app",
        "core_app_inbox": "core_app",
        "dup_x_items": "dup_x",
    }


@pytest.mark.parametrize("table", ["items", "other_items", "omega_"])
def test_core_app_models_tables_carry_the_plugin_name(fake_dist, tmp_path, table):
    fake_dist("omega", models_source({table: ""}))
    with pytest.raises(PluginDeclarationError, match=f"rename it omega_{table}"):
        _app(tmp_path, ["omega"])


def test_core_app_models_must_return_a_metadata(fake_dist, tmp_path):
    source = """
    from core_app import hookimpl

    @hookimpl
    def core_app_models():
        return ["omega_items"]
    """
    fake_dist("omega", textwrap.dedent(source))
    with pytest.raises(PluginDeclarationError, match="plugin_metadata"):
        _app(tmp_path, ["omega"])


def test_a_table_belongs_to_the_longest_plugin_prefix():
    plugins = ["shop", "shop_extra", "core_app"]
    assert owner_of("shop_users", plugins) == "shop"
    assert owner_of("shop_extra_items", plugins) == "shop_extra"
    assert owner_of("core_app_outbox", plugins) == "core_app"
    assert owner_of("alembic_version_shop", plugins) == "shop"
    assert owner_of("users", plugins) is None


def test_the_default_database_is_sqlite_in_the_instance_folder_in_wal_mode(tmp_path):
    app = _app(tmp_path, ["shop"])
    database = current_database(app)
    assert database.url.database == str(tmp_path / "instance" / "core_app.sqlite3")
    with database.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_a_task_and_a_request_get_a_session_closed_with_their_app_context(tmp_path, database_url):
    app = _app(tmp_path, ["shop"], DATABASE_URL=database_url)
    engine = current_database(app).engine
    with app.app_context():
        first = session()
        assert session() is first  # one per context
        first.execute(text("SELECT 1"))
        assert engine.pool.checkedout() == 1
    assert engine.pool.checkedout() == 0  # closed when the context ended
    with app.app_context():
        assert session() is not first
    with app.test_request_context():
        session().execute(text("SELECT 1"))
    assert engine.pool.checkedout() == 0


def test_engines_are_forgotten_in_a_forked_child(tmp_path, database_url):
    """gunicorn and Celery's prefork pool fork after the app is built: a child never
    uses the parent's pooled connections."""
    app = _app(tmp_path, ["shop"], DATABASE_URL=database_url)
    engine = current_database(app).engine
    with engine.connect() as connection:
        # Kept (not its id): a freed object's id can be reused by the child's new one.
        parent_connection = connection.connection.dbapi_connection
    assert engine.pool.checkedin() == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's cleanup
        try:
            fresh = engine.pool.checkedin() == 0
            with engine.connect() as connection:
                works = connection.execute(text("SELECT 1")).scalar() == 1
                other = connection.connection.dbapi_connection is not parent_connection
            os.write(write, b"ok" if fresh and works and other else b"no")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 2) == b"ok"
    with engine.connect() as connection:  # the parent's pool still works
        assert connection.execute(text("SELECT 1")).scalar() == 1


@pytest.fixture
def core_app_plugins():
    return ["shop"]


def test_db_session_rolls_back_what_the_test_and_its_requests_commit(app, db_session):
    from core_app_shop.models import User

    client = app.test_client()
    assert client.post("/api/shop/users", json={"name": "Ann", "email": "a@example.org"})
    db_session.add(User(name="Bob", email="b@example.org"))
    db_session.commit()
    assert [u["name"] for u in client.get("/api/shop/users").json["users"]] == ["Ann", "Bob"]


def test_after_a_rolled_back_block_nothing_is_left(app):
    from core_app_shop.models import User

    database = current_database(app)
    with app.app_context():
        with database.rolled_back() as inside:
            app.test_client().post("/api/shop/users", json={"name": "A", "email": "a@x.org"})
            assert inside.query(User).count() == 1
        assert session().query(User).count() == 0
