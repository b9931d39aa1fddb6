"""Mounting: prefixes, overrides, and every overlap refused (strict) or skipped (lenient)."""

from __future__ import annotations

import pytest
from fakes import (
    Refusal,
    blueprint_source,
    check_lenient_skip,
    check_strict_refusal,
    config,
)

from core_app import PluginConflictError, PluginDeclarationError, create_app


def _pair(fake_dist, alpha_prefix, beta_source):
    """Plugin alpha (mounted first, survives) and the plugin beta under test."""
    fake_dist("alpha", blueprint_source("alpha", alpha_prefix), dist_name="core-app-alpha")
    beta = fake_dist("beta", beta_source, dist_name="core-app-beta", version="2.5.1")
    fake_dist("good", blueprint_source("good"), dist_name="core-app-good")
    return {"beta": beta}, {"alpha": f"{alpha_prefix}/ping", "good": "/api/good/ping"}


def _record_route(rule):
    """Module source that makes the blueprint add ``rule`` to the app itself."""
    return f"""
    def _add_route(state):
        state.app.add_url_rule({rule!r}, "grabbed", lambda: {{"plugin": "grabbed"}})


    blueprint.record(_add_route)
    """


def same_prefix(fake_dist):
    bad, survivors = _pair(fake_dist, "/api/same", blueprint_source("beta", "/api/same"))
    return Refusal(
        bad, PluginConflictError, survivors, ["alpha", "beta", "good"], ["/api/same", "'alpha'"]
    )


def prefix_below_another(fake_dist):
    bad, survivors = _pair(fake_dist, "/api/a", blueprint_source("beta", "/api/a/b"))
    return Refusal(
        bad,
        PluginConflictError,
        survivors,
        ["alpha", "beta", "good"],
        ["'/api/a/b'", "'/api/a'", "'alpha'"],
        bad_urls=["/api/a/b/ping"],
    )


def prefix_above_another(fake_dist):
    bad, survivors = _pair(fake_dist, "/api/a/b", blueprint_source("beta", "/api/a"))
    return Refusal(
        bad,
        PluginConflictError,
        survivors,
        ["alpha", "beta", "good"],
        ["'/api/a'", "'/api/a/b'", "'alpha'"],
        bad_urls=["/api/a/ping"],
    )


def root_prefix(fake_dist):
    bad, survivors = _pair(fake_dist, "/api/alpha", blueprint_source("beta", "/"))
    return Refusal(
        bad, PluginConflictError, survivors, ["alpha", "beta", "good"], ["'/'"], ["/ping"]
    )


def _host_route_prefix(route):
    def builder(fake_dist):
        bad, survivors = _pair(fake_dist, "/api/alpha", blueprint_source("beta", route))
        return Refusal(
            bad,
            PluginConflictError,
            survivors,
            ["alpha", "beta", "good"],
            [f"'{route}'", "host"],
            bad_urls=[f"{route}/ping"],
        )

    builder.__name__ = f"prefix_over_host_route_{route.strip('/')}"
    return builder


def variable_prefix(fake_dist):
    bad, survivors = _pair(fake_dist, "/api/alpha", blueprint_source("beta", "/api/<tenant>"))
    return Refusal(bad, PluginDeclarationError, survivors, ["alpha", "beta", "good"], ["variable"])


def rule_of_the_host(fake_dist):
    beta_source = blueprint_source("beta", body=_record_route("/health"))
    bad, survivors = _pair(fake_dist, "/api/alpha", beta_source)
    return Refusal(
        bad,
        PluginConflictError,
        survivors,
        ["alpha", "beta", "good"],
        ["GET /health", "host"],
        bad_urls=["/api/beta/ping"],
    )


def rule_of_another_plugin(fake_dist):
    beta_source = blueprint_source("beta", body=_record_route("/api/alpha/ping"))
    bad, survivors = _pair(fake_dist, "/api/alpha", beta_source)
    return Refusal(
        bad,
        PluginConflictError,
        survivors,
        ["alpha", "beta", "good"],
        ["GET /api/alpha/ping", "'alpha'"],
        bad_urls=["/api/beta/ping"],
    )


def route_outside_prefix(fake_dist):
    beta_source = blueprint_source("beta", body=_record_route("/outside"))
    bad, survivors = _pair(fake_dist, "/api/alpha", beta_source)
    return Refusal(
        bad,
        PluginConflictError,
        survivors,
        ["alpha", "beta", "good"],
        ["'/outside'", "outside its prefix"],
        bad_urls=["/outside", "/api/beta/ping"],
    )


def blueprint_without_prefix(fake_dist):
    bad, survivors = _pair(fake_dist, "/api/alpha", blueprint_source("beta", ""))
    return Refusal(
        bad,
        PluginDeclarationError,
        survivors,
        ["alpha", "beta", "good"],
        ["url_prefix", "PLUGIN_URL_PREFIXES"],
        bad_urls=["/ping"],
    )


def same_blueprint_name(fake_dist):
    beta_source = blueprint_source("beta", blueprint="alpha")
    bad, survivors = _pair(fake_dist, "/api/alpha", beta_source)
    return Refusal(
        bad,
        PluginConflictError,
        survivors,
        ["alpha", "beta", "good"],
        ["'alpha'", "blueprint"],
        bad_urls=["/api/beta/ping"],
    )


def app_errorhandler(fake_dist):
    body = """
    @blueprint.app_errorhandler(404)
    def not_found(error):
        return "<h1>nothing here</h1>", 404
    """
    bad, survivors = _pair(fake_dist, "/api/alpha", blueprint_source("beta", body=body))
    return Refusal(
        bad,
        PluginConflictError,
        survivors,
        ["alpha", "beta", "good"],
        ["app_errorhandler", "404"],
        bad_urls=["/api/beta/ping"],
    )


REFUSALS = {
    builder.__name__: builder
    for builder in (
        same_prefix,
        prefix_below_another,
        prefix_above_another,
        root_prefix,
        _host_route_prefix("/health"),
        _host_route_prefix("/ready"),
        _host_route_prefix("/plugins"),
        variable_prefix,
        rule_of_the_host,
        rule_of_another_plugin,
        route_outside_prefix,
        blueprint_without_prefix,
        same_blueprint_name,
        app_errorhandler,
    )
}


@pytest.mark.parametrize("builder_name", sorted(REFUSALS))
def test_refused_in_strict_mode(fake_dist, tmp_path, builder_name):
    refusal = REFUSALS[builder_name](fake_dist)
    with pytest.raises(refusal.error) as info:
        create_app(config(tmp_path, refusal.plugins, PLUGIN_ERRORS="raise"))
    check_strict_refusal(refusal, info.value)


@pytest.mark.parametrize("builder_name", sorted(REFUSALS))
def test_skipped_in_lenient_mode(fake_dist, tmp_path, builder_name):
    refusal = REFUSALS[builder_name](fake_dist)
    app = create_app(config(tmp_path, refusal.plugins, PLUGIN_ERRORS="skip"))
    check_lenient_skip(refusal, app)
    # Nothing of the refused blueprint reached the app.
    owners = {rule.endpoint.partition(".")[0] for rule in app.url_map.iter_rules()}
    assert "beta" not in owners and "grabbed" not in owners
    assert "beta" not in app.blueprints
    assert app.test_client().get("/no/such/page").is_json  # host 404 handler intact


@pytest.mark.parametrize("builder_name", ["same_prefix", "rule_of_another_plugin"])
def test_conflict_error_names_both_sides(fake_dist, tmp_path, builder_name):
    refusal = REFUSALS[builder_name](fake_dist)
    with pytest.raises(PluginConflictError) as info:
        create_app(config(tmp_path, refusal.plugins, PLUGIN_ERRORS="raise"))
    assert info.value.plugin == "beta"
    assert "alpha" in (info.value.other or "")


# -- prefixes --------------------------------------------------------------------------


def _rules(app, blueprint):
    return sorted(
        rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith(f"{blueprint}.")
    )


def test_core_app_blueprint_is_mounted_under_its_declared_prefix(fake_dist, tmp_path):
    body = """
    @blueprint.post("/items/<int:item_id>")
    def item(item_id):
        return {"item": item_id}, 201
    """
    fake_dist("mounted", blueprint_source("mounted", "/api/v1/mounted", body=body))
    app = create_app(config(tmp_path, ["mounted"], PLUGIN_ERRORS="raise"))
    client = app.test_client()
    assert client.get("/api/v1/mounted/ping").get_json() == {"plugin": "mounted"}
    response = client.post("/api/v1/mounted/items/7")
    assert response.status_code == 201 and response.get_json() == {"item": 7}
    record = app.extensions["core_app"].records["mounted"]
    assert record.url_prefix == "/api/v1/mounted"
    assert record.blueprint == "mounted"
    assert record.routes == _rules(app, "mounted")
    assert len(record.routes) == 2


@pytest.mark.parametrize("declared", ["api/slashes/", "/api/slashes/", "//api/slashes"])
def test_prefix_is_normalised(fake_dist, tmp_path, declared):
    fake_dist("slashes", blueprint_source("slashes", declared))
    app = create_app(config(tmp_path, ["slashes"], PLUGIN_ERRORS="raise"))
    assert app.extensions["core_app"].records["slashes"].url_prefix == "/api/slashes"
    assert app.test_client().get("/api/slashes/ping").status_code == 200


def test_nested_blueprints_mount_under_the_plugin_prefix(fake_dist, tmp_path):
    body = """
    from flask import Blueprint as _Blueprint

    child = _Blueprint("child", __name__, url_prefix="/child")


    @child.get("/leaf")
    def leaf():
        return {"leaf": True}


    blueprint.register_blueprint(child)
    """
    fake_dist("nest", blueprint_source("nest", body=body))
    app = create_app(config(tmp_path, ["nest"], PLUGIN_ERRORS="raise"))
    assert app.test_client().get("/api/nest/child/leaf").get_json() == {"leaf": True}
    assert "/api/nest/child/leaf" in app.extensions["core_app"].records["nest"].routes


def test_prefix_override_from_config_moves_the_routes(fake_dist, tmp_path):
    fake_dist("movable", blueprint_source("movable"))
    app = create_app(
        config(
            tmp_path,
            ["movable"],
            PLUGIN_ERRORS="raise",
            PLUGIN_URL_PREFIXES={"movable": "/elsewhere"},
        )
    )
    client = app.test_client()
    assert client.get("/elsewhere/ping").get_json() == {"plugin": "movable"}
    assert client.get("/api/movable/ping").status_code == 404
    assert app.extensions["core_app"].records["movable"].url_prefix == "/elsewhere"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CORE_APP_PLUGIN_URL_PREFIXES__movable", "/elsewhere"),
        ("CORE_APP_PLUGIN_URL_PREFIXES", '{"movable": "/elsewhere"}'),
    ],
)
def test_prefix_override_from_the_environment(fake_dist, tmp_path, monkeypatch, variable, value):
    fake_dist("movable", blueprint_source("movable"))
    monkeypatch.setenv(variable, value)
    app = create_app(config(tmp_path, ["movable"], PLUGIN_ERRORS="raise"))
    client = app.test_client()
    assert client.get("/elsewhere/ping").get_json() == {"plugin": "movable"}
    assert client.get("/api/movable/ping").status_code == 404

    # The override belongs to that app only: without the variable, the next app
    # mounts the plugin where it says.
    monkeypatch.delenv(variable)
    again = create_app(config(tmp_path / "again", ["movable"], PLUGIN_ERRORS="raise"))
    assert again.test_client().get("/api/movable/ping").status_code == 200
    assert again.test_client().get("/elsewhere/ping").status_code == 404


def test_prefix_override_resolves_a_conflict(fake_dist, tmp_path):
    fake_dist("alpha", blueprint_source("alpha", "/api/same"))
    fake_dist("beta", blueprint_source("beta", "/api/same"))
    plugins = ["alpha", "beta"]
    with pytest.raises(PluginConflictError):
        create_app(config(tmp_path / "clash", plugins, PLUGIN_ERRORS="raise"))
    app = create_app(
        config(tmp_path, plugins, PLUGIN_ERRORS="raise", PLUGIN_URL_PREFIXES={"beta": "/api/b"})
    )
    client = app.test_client()
    assert client.get("/api/same/ping").get_json() == {"plugin": "alpha"}
    assert client.get("/api/b/ping").get_json() == {"plugin": "beta"}


def test_prefix_override_gives_a_prefix_to_a_blueprint_without_one(fake_dist, tmp_path):
    fake_dist("bare", blueprint_source("bare", ""))
    app = create_app(
        config(tmp_path, ["bare"], PLUGIN_ERRORS="raise", PLUGIN_URL_PREFIXES={"bare": "/bare"})
    )
    assert app.test_client().get("/bare/ping").get_json() == {"plugin": "bare"}


def test_prefix_override_to_root_is_refused(fake_dist, tmp_path):
    fake_dist("rooted", blueprint_source("rooted"))
    with pytest.raises(PluginConflictError) as info:
        create_app(
            config(tmp_path, ["rooted"], PLUGIN_ERRORS="raise", PLUGIN_URL_PREFIXES={"rooted": "/"})
        )
    assert "PLUGIN_URL_PREFIXES" in str(info.value)


def test_example_plugin_prefix_override(tmp_path):
    app = create_app(
        config(tmp_path, ["shop"], PLUGIN_ERRORS="raise", PLUGIN_URL_PREFIXES={"shop": "/store"})
    )
    client = app.test_client()
    assert client.get("/store/home").status_code == 200
    assert client.get("/api/shop/home").status_code == 404


def test_routes_cannot_be_added_after_start_up(fake_dist, tmp_path):
    fake_dist("sealed", blueprint_source("sealed"))
    app = create_app(config(tmp_path, ["sealed"], PLUGIN_ERRORS="raise"))
    with pytest.raises(RuntimeError, match="blueprint"):
        app.add_url_rule("/late", "late", lambda: "late")
    assert app.test_client().get("/late").status_code == 404


def test_every_plugin_with_an_app_errorhandler_is_refused(fake_dist, tmp_path):
    """The second offender is refused too, although the first left its handler code."""
    body = """
    @blueprint.app_errorhandler(404)
    def not_found(error):
        return "<h1>nothing here</h1>", 404
    """
    fake_dist("beta", blueprint_source("beta", body=body))
    fake_dist("gamma", blueprint_source("gamma", body=body))
    fake_dist("good", blueprint_source("good"))
    app = create_app(config(tmp_path, ["beta", "gamma", "good"], PLUGIN_ERRORS="skip"))
    statuses = {record.name: record.status for record in app.extensions["core_app"].plugins()}
    assert statuses["beta"] == statuses["gamma"] == "failed"
    assert statuses["good"] == "loaded"
    response = app.test_client().get("/no/such/page")
    assert response.status_code == 404 and response.is_json
