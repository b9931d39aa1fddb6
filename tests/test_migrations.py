"""Each plugin's migrations: its own branch and version table, upgraded in load order,
refused when they touch another plugin's tables; on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from datakit import (
    columns_of,
    core_app_db,
    create_table,
    data_plugin,
    revision,
    scalar,
    tables_of,
)
from fakes import config

from core_app import PluginConflictError, PluginDeclarationError, create_app
from core_app.discovery import rescan
from core_app.migrations import upgrade_all

ITEMS = create_table("alpha_items", "sa.Column('name', sa.String(50))")


def _app(tmp_path, url, plugins, **more):
    return create_app(
        config(
            tmp_path / "instance",
            plugins,
            DATABASE_URL=url,
            DATABASE_AUTO_UPGRADE=False,
            PLUGIN_ERRORS="raise",
            **more,
        )
    )


def _alpha(fake_dist):
    return data_plugin(
        fake_dist,
        "alpha",
        {"alpha_items": ", Column('name', String(50))"},
        [revision("alpha", "alpha_0001", None, ITEMS, "op.drop_table('alpha_items')")],
    )


def test_core_app_migrations_each_plugin_in_its_own_branch_and_version_table(
    fake_dist, tmp_path, database_url
):
    _alpha(fake_dist)
    data_plugin(
        fake_dist,
        "beta",
        {"beta_notes": ""},
        [
            revision("beta", "beta_0001", None, create_table("beta_notes")),
            revision(
                "beta",
                "beta_0002",
                "beta_0001",
                "op.add_column('beta_notes', sa.Column('body', sa.Text()))",
            ),
        ],
    )
    app = _app(tmp_path, database_url, ["alpha", "beta"])
    report = upgrade_all(app, app.extensions["core_app"])
    assert report == [
        "core_app: <base> -> core_app_0001",
        "alpha: <base> -> alpha_0001",
        "beta: <base> -> beta_0002",
    ]
    assert {"alpha_items", "beta_notes", "core_app_outbox", "core_app_inbox"} <= tables_of(
        database_url
    )
    assert scalar(database_url, "SELECT version_num FROM alembic_version_alpha") == "alpha_0001"
    assert scalar(database_url, "SELECT version_num FROM alembic_version_beta") == "beta_0002"
    assert "body" in columns_of(database_url, "beta_notes")
    # Again: nothing to do.
    assert upgrade_all(app, app.extensions["core_app"]) == [
        "core_app: at head",
        "alpha: at head",
        "beta: at head",
    ]


def test_core_app_migrations_folder_named_by_the_hook(fake_dist, tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "gamma_0001.py").write_text(
        revision("gamma", "gamma_0001", None, create_table("gamma_things"))
    )
    source = f"""
    from core_app import hookimpl

    @hookimpl
    def core_app_migrations():
        return {str(folder)!r}
    """
    fake_dist("gamma", textwrap.dedent(source))
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    app = _app(tmp_path, url, ["gamma"])
    assert app.extensions["core_app.db"].migrations["gamma"] == folder.resolve()
    upgrade_all(app, app.extensions["core_app"])
    assert "gamma_things" in tables_of(url)


def test_a_first_revision_without_the_plugin_branch_label_is_refused(fake_dist, tmp_path):
    unlabelled = revision("x", "delta_0001", None, create_table("delta_t")).replace(
        "branch_labels = ('x',)", "branch_labels = ()"
    )
    fake_dist("delta", "", files={"migrations/delta_0001.py": unlabelled})
    with pytest.raises(PluginDeclarationError, match=r"branch_labels = \('delta',\)"):
        _app(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", ["delta"])


def test_an_upgrade_that_changes_another_plugins_table_is_refused_and_rolled_back(
    fake_dist, tmp_path, database_url
):
    _alpha(fake_dist)
    sneaky = """
        op.create_table('zeta_things', sa.Column('id', sa.Integer(), primary_key=True))
        op.add_column('alpha_items', sa.Column('stolen', sa.Integer()))
    """
    data_plugin(
        fake_dist, "zeta", {"zeta_things": ""}, [revision("zeta", "zeta_0001", None, sneaky)]
    )
    app = _app(tmp_path, database_url, ["alpha", "zeta"])
    with pytest.raises(PluginConflictError) as info:
        upgrade_all(app, app.extensions["core_app"])
    message = str(info.value)
    assert "'zeta'" in message and "alpha_items (altered, owned by alpha)" in message
    assert info.value.other == "alpha"
    assert "zeta_things" not in tables_of(database_url)  # rolled back, its own table too
    assert "stolen" not in columns_of(database_url, "alpha_items")
    assert "alembic_version_zeta" not in tables_of(database_url)


def test_a_migration_creating_a_table_outside_its_prefix_is_refused(
    fake_dist, tmp_path, database_url
):
    data_plugin(fake_dist, "eta", {}, [revision("eta", "eta_0001", None, create_table("users"))])
    app = _app(tmp_path, database_url, ["eta"])
    with pytest.raises(PluginConflictError, match=r"users \(created, owned by no plugin\)"):
        upgrade_all(app, app.extensions["core_app"])
    assert "users" not in tables_of(database_url)


def test_foreign_keys_only_to_a_declared_dependency_whose_migrations_run_first(
    fake_dist, tmp_path, database_url
):
    data_plugin(
        fake_dist,
        "ledger",
        {"ledger_accounts": ""},
        [revision("ledger", "ledger_0001", None, create_table("ledger_accounts"))],
    )
    account = "sa.Column('account_id', sa.Integer(), sa.ForeignKey('ledger_accounts.id'))"
    entries = create_table("audit_entries", account)
    columns = ", Column('account_id', Integer, ForeignKey('ledger_accounts.id'))"
    data_plugin(
        fake_dist,
        "audit",
        {"audit_entries": columns},
        [revision("audit", "audit_0001", None, entries)],
        dependencies={"ledger": ""},
    )
    app = _app(tmp_path, database_url, ["audit", "ledger"])
    report = upgrade_all(app, app.extensions["core_app"])
    # audit sorts first by name; its dependency is migrated before it all the same
    assert [line.split(":")[0] for line in report] == ["core_app", "ledger", "audit"]
    assert {"audit_entries", "ledger_accounts"} <= tables_of(database_url)


def test_a_foreign_key_to_a_plugin_not_depended_on_is_refused(fake_dist, tmp_path):
    fake_dist("ledger", _tables_only({"ledger_accounts": ""}))
    fake_dist(
        "audit", _tables_only({"audit_entries": ", Column('a', ForeignKey('ledger_accounts.id'))"})
    )
    with pytest.raises(PluginDeclarationError) as info:
        _app(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}", ["audit", "ledger"])
    assert info.value.plugin == "audit"
    assert "belongs to plugin 'ledger'" in str(info.value)
    assert "core_app_dependencies" in str(info.value)


def _tables_only(tables):
    from datakit import models_source

    return models_source(tables)


def test_uninstalling_a_plugin_leaves_upgrade_and_current_working(
    fake_dist, tmp_path, database_url
):
    alpha = _alpha(fake_dist)
    zeta = data_plugin(
        fake_dist,
        "zeta",
        {"zeta_things": ""},
        [revision("zeta", "zeta_0001", None, create_table("zeta_things"))],
    )
    instance = tmp_path / "instance"
    paths = [alpha.path, zeta.path]
    done = core_app_db(["upgrade"], database_url, instance, paths, CORE_APP_PLUGINS="alpha,zeta")
    assert done.returncode == 0, done.stderr
    # zeta is uninstalled: only alpha's folder is on the path now.
    upgrade = core_app_db(["upgrade"], database_url, instance, [alpha.path])
    assert upgrade.returncode == 0, upgrade.stderr
    assert "alpha: at head" in upgrade.stdout
    current = core_app_db(["current"], database_url, instance, [alpha.path])
    assert current.returncode == 0, current.stderr
    assert "alpha: alpha_0001 (head)" in current.stdout
    assert (
        "zeta: zeta_0001 (not installed: its tables are left alone: zeta_things)" in current.stdout
    )
    assert "zeta_things" in tables_of(database_url)


def test_db_commands_history_upgrade_current_check_and_revision(fake_dist, tmp_path, database_url):
    """The commands as an operator and a plugin author run them: the model gains a
    column, ``db check`` fails, ``db revision`` writes the migration of that column
    only, ``db upgrade`` applies it and ``db check`` passes."""
    alpha = _alpha(fake_dist)
    instance, paths, only = tmp_path / "instance", [alpha.path], {"CORE_APP_PLUGINS": "alpha"}

    def db(*args):
        return core_app_db(list(args), database_url, instance, paths, **only)

    history = db("history")
    assert history.returncode == 0, history.stderr
    assert "<base> -> alpha_0001 (alpha) (head)" in history.stdout
    assert "<base> -> core_app_0001 (core_app) (head)" in history.stdout
    assert "not at head" in db("current").stdout
    assert db("check").returncode == 1
    upgrade = db("upgrade")
    assert upgrade.stdout.splitlines() == [
        "core_app: <base> -> core_app_0001",
        "alpha: <base> -> alpha_0001",
    ], upgrade.stderr
    assert db("check").returncode == 0

    # The model gains a column: models and migrations disagree.
    module = next(alpha.path.glob("fake_alpha_*.py"))
    module.write_text(
        module.read_text().replace(
            "Column('name', String(50))", "Column('name', String(50)), Column('note', String(20))"
        )
    )
    check = db("check")
    assert check.returncode == 1
    assert "alpha: models and migrations differ" in check.stderr and "note" in check.stderr
    written = db("revision", "alpha", "-m", "add a note")
    assert written.returncode == 0, written.stderr
    (new,) = [p for p in (alpha.path / "migrations").glob("*.py") if "alpha_0001" not in p.name]
    source = new.read_text()
    assert "op.add_column('note'" in source or "sa.Column('note'" in source
    assert "down_revision = 'alpha_0001'" in source and "core_app" not in source.split("def")[1]
    upgrade = db("upgrade")
    assert "alpha: alpha_0001 ->" in upgrade.stdout, upgrade.stderr
    assert "note" in columns_of(database_url, "alpha_items")
    assert db("check").returncode == 0
    down = db("downgrade", "alpha", "alpha_0001")
    assert down.returncode == 0 and "-> alpha_0001" in down.stdout, down.stderr
    assert "note" not in columns_of(database_url, "alpha_items")


def test_development_migrates_once_when_processes_start_together(fake_dist, tmp_path):
    """The server, its embedded worker and the reloader build their apps at the same
    moment: one migrates (under the lock), the others find the database at head."""
    slow = (
        ITEMS
        + "\nimport pathlib, time\ntime.sleep(1)\n"
        + (
            "pathlib.Path(op.get_context().config.attributes['core_app.database'].url.database)"
            ".with_name('migrated').open('a').write('x')"
        )
    )
    alpha = data_plugin(
        fake_dist,
        "alpha",
        {"alpha_items": ", Column('name', String(50))"},
        [revision("alpha", "alpha_0001", None, slow)],
    )
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    env = {
        "PYTHONPATH": str(alpha.path) + ":" + ":".join(sys.path),
        "CORE_APP_DATABASE_URL": url,
        "CORE_APP_INSTANCE_PATH": str(tmp_path / "instance"),
        "CORE_APP_PLUGINS": "alpha",
        "CORE_APP_DISCOVERY_CACHE": "false",
    }
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", "from core_app import create_app; create_app()"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in starts:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert (tmp_path / "migrated").read_text() == "x"
    assert scalar(url, "SELECT version_num FROM alembic_version_alpha") == "alpha_0001"


def test_production_never_migrates_by_itself_and_ready_names_the_plugin_behind(fake_dist, tmp_path):
    import secrets

    _alpha(fake_dist)
    settings = {
        "ENV": "production",
        "SECRET_KEY": secrets.token_hex(),
        "ALLOW_EMBEDDED_BROKER": True,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DATABASE_ALLOW_SQLITE": True,
    }
    with pytest.raises(Exception, match="never migrates implicitly"):
        create_app(config(tmp_path / "a", ["alpha"], DATABASE_AUTO_UPGRADE=True, **settings))
    app = create_app(config(tmp_path / "b", ["alpha"], EXPOSE_HEALTH_DETAILS=True, **settings))
    ready = app.test_client().get("/ready")
    assert ready.status_code == 503
    error = ready.get_json()["checks"]["migrations"]["error"]
    assert "alpha at <base>, head alpha_0001" in error and "core_app at <base>" in error
    upgrade_all(app, app.extensions["core_app"])
    assert app.test_client().get("/ready").status_code == 200


def test_production_refuses_sqlite_for_plugins_with_tables_unless_allowed(fake_dist, tmp_path):
    import secrets

    from core_app import ConfigError

    _alpha(fake_dist)
    settings = config(
        tmp_path,
        ["alpha"],
        ENV="production",
        SECRET_KEY=secrets.token_hex(),
        ALLOW_EMBEDDED_BROKER=True,
    )
    with pytest.raises(ConfigError) as info:
        create_app(settings)
    assert "plugins alpha keep tables" in str(info.value)
    assert "CORE_APP_DATABASE_URL=postgresql+psycopg://" in str(info.value)
    assert create_app({**settings, "DATABASE_ALLOW_SQLITE": True})
    rescan()


def test_db_upgrade_of_one_plugin_imports_it_and_its_dependencies_only(fake_dist, tmp_path):
    """``db upgrade audit`` is a process of role ``db`` for audit: it loads audit and the
    ledger it depends on, never an unrelated plugin."""
    from fakes import never_import_source

    ledger = data_plugin(
        fake_dist,
        "ledger",
        {"ledger_accounts": ""},
        [revision("ledger", "ledger_0001", None, create_table("ledger_accounts"))],
    )
    audit = data_plugin(
        fake_dist,
        "audit",
        {"audit_entries": ""},
        [revision("audit", "audit_0001", None, create_table("audit_entries"))],
        dependencies={"ledger": ""},
    )
    other = fake_dist("other", "")
    (other.path / f"{other.module}.py").write_text(never_import_source(other.marker))
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    paths = [ledger.path, audit.path, other.path]
    done = core_app_db(["upgrade", "audit"], url, tmp_path / "instance", paths)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "core_app: <base> -> core_app_0001",
        "ledger: <base> -> ledger_0001",
        "audit: <base> -> audit_0001",
    ]
    assert not other.marker.exists()
    assert "shop_users" not in tables_of(url)  # the installed shop was not loaded either
