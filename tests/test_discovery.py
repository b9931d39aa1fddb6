"""Discovery: entry points read once per process, and unwanted plugins never imported."""

from __future__ import annotations

import sys

import pytest
from fakes import blueprint_source, config, never_import_source

from core_app import CoreAppError, PluginVersionError, create_app, discovery
from core_app.discovery import installed_plugins, rescan


def test_installed_plugins_sees_a_fake_distribution(fake_dist):
    dist = fake_dist(
        "seen",
        blueprint_source("seen"),
        version="3.2.1",
        requires=["flask>=3", "core-app>=1.0,<2", "pytest; extra == 'test'"],
    )
    sources = {source.name: source for source in installed_plugins()}
    source = sources["seen"]
    assert source.distribution == dist.name
    assert source.version == dist.version
    assert source.target == dist.target
    assert source.host_requirement is not None
    assert set(source.host_requirement.split(",")) == {">=1.0", "<2"}
    assert dist.module not in sys.modules, "discovery must not import the plugin"


def test_host_requirement_ignores_other_requirements_and_extras(fake_dist):
    fake_dist(
        "extras_only",
        version="1.0",
        requires=["core-app>=99; extra == 'dev'", "packaging>=24"],
    )
    fake_dist("no_requirements", requires=None)
    sources = {source.name: source for source in installed_plugins()}
    assert sources["extras_only"].host_requirement is None
    assert sources["no_requirements"].host_requirement is None


def test_installed_plugins_are_sorted_by_name(fake_dist):
    for name in ("zeta_plugin", "alpha_plugin", "mid_plugin"):
        fake_dist(name)
    names = [source.name for source in installed_plugins()]
    assert names == sorted(names)
    assert {"zeta_plugin", "alpha_plugin", "mid_plugin"} <= set(names)


def test_entry_points_are_scanned_once_per_process(fake_dist, tmp_path):
    fake_dist("once", blueprint_source("once"))
    rescan()
    before = discovery.scan_count
    first = create_app(config(tmp_path / "a", ["once"]))
    second = create_app(config(tmp_path / "b", ["once"]))
    assert discovery.scan_count == before + 1
    for app in (first, second):
        assert app.test_client().get("/api/once/ping").status_code == 200


def test_rescan_sees_a_distribution_installed_after_the_first_scan(fake_dist, tmp_path):
    rescan()
    names_before = {source.name for source in installed_plugins()}
    assert "late" not in names_before
    fake_dist("late", blueprint_source("late"))  # the fixture rescans
    assert "late" in {source.name for source in installed_plugins()}
    app = create_app(config(tmp_path, ["late"]))
    assert app.test_client().get("/api/late/ping").get_json() == {"plugin": "late"}


@pytest.mark.parametrize(
    ("how", "mode"),
    [
        ("PLUGINS", "raise"),
        ("DISABLED_PLUGINS", "raise"),
        ("CORE_APP_PLUGINS", "raise"),
        ("CORE_APP_DISABLED_PLUGINS", "raise"),
        ("PLUGINS", "skip"),
        ("CORE_APP_DISABLED_PLUGINS", "skip"),
    ],
)
def test_a_plugin_that_is_not_enabled_is_never_imported(
    fake_dist, tmp_path, monkeypatch, how, mode
):
    good = fake_dist("wanted", blueprint_source("wanted"))
    unwanted = fake_dist("unwanted", "")
    unwanted.path.joinpath(f"{unwanted.module}.py").write_text(never_import_source(unwanted.marker))

    test_config = config(tmp_path, None, PLUGIN_ERRORS=mode)
    del test_config["PLUGINS"]  # let the environment decide, where it does
    if how == "PLUGINS":
        test_config["PLUGINS"] = [good.plugin]
    elif how == "DISABLED_PLUGINS":
        test_config["DISABLED_PLUGINS"] = [unwanted.plugin, "shop", "notifications"]
    elif how == "CORE_APP_PLUGINS":
        monkeypatch.setenv("CORE_APP_PLUGINS", f"{good.plugin}, some_other_plugin")
    else:
        monkeypatch.setenv("CORE_APP_DISABLED_PLUGINS", f"{unwanted.plugin},shop,notifications")

    app = create_app(test_config)

    assert unwanted.module not in sys.modules
    assert not unwanted.marker.exists()
    records = app.extensions["core_app"].records
    assert records[unwanted.plugin].status == "disabled"
    assert records[unwanted.plugin].enabled is False
    assert records[good.plugin].status == "loaded"
    assert app.test_client().get("/api/wanted/ping").status_code == 200


def test_empty_allowlist_from_the_environment_loads_no_plugin(fake_dist, tmp_path, monkeypatch):
    unwanted = fake_dist("unwanted", "")
    unwanted.path.joinpath(f"{unwanted.module}.py").write_text(never_import_source(unwanted.marker))
    monkeypatch.setenv("CORE_APP_PLUGINS", "")
    test_config = config(tmp_path, None, PLUGIN_ERRORS="raise")
    del test_config["PLUGINS"]

    app = create_app(test_config)

    host = app.extensions["core_app"]
    assert app.config["PLUGINS"] == []
    assert host.active(builtins=False) == []
    assert {record.status for record in host.plugins()} == {"disabled"}
    assert unwanted.module not in sys.modules and not unwanted.marker.exists()
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    without_plugins = create_app(config(tmp_path / "none", [], PLUGIN_ERRORS="raise"))
    assert rules == {rule.rule for rule in without_plugins.url_map.iter_rules()}  # the host's
    assert {"/health", "/ready", "/plugins"} <= rules


def test_allowlist_as_json_list_in_the_environment(fake_dist, tmp_path, monkeypatch):
    fake_dist("first", blueprint_source("first"))
    fake_dist("second", blueprint_source("second"))
    monkeypatch.setenv("CORE_APP_PLUGINS", '["first", "second"]')
    test_config = config(tmp_path, None)
    del test_config["PLUGINS"]
    app = create_app(test_config)
    loaded = [record.name for record in app.extensions["core_app"].active(builtins=False)]
    assert loaded == ["first", "second"]


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_a_plugin_for_another_host_version_is_not_imported(fake_dist, tmp_path, mode):
    old = fake_dist("needs_future", "", requires="core-app>=99", version="7.0")
    old.path.joinpath(f"{old.module}.py").write_text(never_import_source(old.marker))
    test_config = config(tmp_path, [old.plugin], PLUGIN_ERRORS=mode)
    if mode == "raise":
        with pytest.raises(PluginVersionError) as info:
            create_app(test_config)
        assert ">=99" in str(info.value)
        assert discovery.host_version() in str(info.value)
    else:
        app = create_app(test_config)
        assert app.extensions["core_app"].records[old.plugin].status == "failed"
    assert old.module not in sys.modules
    assert not old.marker.exists()


@pytest.mark.parametrize("exclude_by", ["PLUGINS", "DISABLED_PLUGINS"])
def test_an_excluded_plugin_cannot_stop_the_start(fake_dist, tmp_path, exclude_by):
    """Duplicate or invalid names of plugins the config excludes do not matter."""
    fake_dist("wanted", blueprint_source("wanted"))
    fake_dist("my-plugin", blueprint_source("my_plugin"))
    fake_dist("twin", blueprint_source("twin"))
    fake_dist("twin", blueprint_source("twin"))
    if exclude_by == "PLUGINS":
        test_config = config(tmp_path, ["wanted"], PLUGIN_ERRORS="raise")
    else:
        test_config = config(
            tmp_path,
            None,
            PLUGIN_ERRORS="raise",
            DISABLED_PLUGINS=["my-plugin", "twin", "shop", "notifications"],
        )
    app = create_app(test_config)
    records = app.extensions["core_app"].records
    assert records["my-plugin"].status == records["twin"].status == "disabled"
    assert app.test_client().get("/api/wanted/ping").status_code == 200

    del test_config["DISABLED_PLUGINS" if exclude_by == "DISABLED_PLUGINS" else "PLUGINS"]
    with pytest.raises(CoreAppError):  # the same plugins, not excluded, are refused
        create_app({**test_config, "DISABLED_PLUGINS": ["shop", "notifications"]})
