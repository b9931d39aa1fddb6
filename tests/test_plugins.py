"""Loading plugins: a refusal affects only its plugin, plugin objects without a
distribution. Every kind of refusal, strict and lenient, is in broken_plugins.py (run by
test_broken_plugins.py); the example shop plugin's API is in test_shop.py."""

from __future__ import annotations

import sys

import pytest
from broken_plugins import SCENARIOS
from fakes import blueprint_source, config

from core_app import PluginConflictError, PluginDeclarationError, create_app


def test_duplicate_plugin_name_error_names_both_distributions(fake_dist, tmp_path):
    one = fake_dist("twin", blueprint_source("twin"), dist_name="core-app-twin-a", version="1.0")
    two = fake_dist("twin", blueprint_source("twin"), dist_name="core-app-twin-b", version="4.0")
    with pytest.raises(PluginConflictError) as info:
        create_app(config(tmp_path, ["twin"], PLUGIN_ERRORS="raise"))
    message = str(info.value)
    for dist in (one, two):
        assert f"{dist.name} {dist.version}" in message
    assert two.name in (info.value.other or "")
    assert one.module not in sys.modules and two.module not in sys.modules


def test_a_route_a_plugin_added_when_ready_is_taken_away_again(fake_dist, tmp_path):
    """Its own routes stay and answer 503 (broken_plugins checks that); the route it
    added outside its prefix leaves the URL map."""
    scenario = SCENARIOS["route_added_when_ready"](fake_dist)
    app = create_app(config(tmp_path, scenario.plugins, PLUGIN_ERRORS="skip"))
    assert "/sneaky" not in {rule.rule for rule in app.url_map.iter_rules()}
    assert app.test_client().get("/sneaky").status_code == 404


def test_a_refused_plugin_does_not_stop_the_plugins_after_it(fake_dist, tmp_path):
    """Lenient mode: one failure in the middle of the load order affects only itself."""
    body = """
    @hookimpl
    def core_app_blueprint(app):
        raise RuntimeError("broken")
    """
    fake_dist("a_first", blueprint_source("a_first"))
    fake_dist("b_broken", blueprint_source("b_broken", body=body, hook=False))
    fake_dist("c_last", blueprint_source("c_last"))
    app = create_app(config(tmp_path, ["a_first", "b_broken", "c_last"], PLUGIN_ERRORS="skip"))
    client = app.test_client()
    assert client.get("/api/a_first/ping").status_code == 200
    assert client.get("/api/c_last/ping").status_code == 200
    assert client.get("/api/b_broken/ping").status_code == 404
    statuses = {r.name: r.status for r in app.extensions["core_app"].plugins()}
    assert statuses["b_broken"] == "failed"
    assert statuses["a_first"] == statuses["c_last"] == "loaded"


def test_plugin_objects_can_be_given_without_a_distribution(tmp_path):
    from flask import Blueprint

    from core_app import hookimpl

    class InProcess:
        @hookimpl
        def core_app_blueprint(self, app):
            blueprint = Blueprint("inproc", __name__, url_prefix="/api/inproc")
            blueprint.add_url_rule("/hi", "hi", lambda: {"hi": True})
            return blueprint

    app = create_app(config(tmp_path, ["inproc"]), plugins={"inproc": InProcess()})
    assert app.test_client().get("/api/inproc/hi").get_json() == {"hi": True}
    record = app.extensions["core_app"].records["inproc"]
    assert record.distribution is None and record.status == "loaded"


def test_plugin_error_from_an_object_without_distribution_says_so(tmp_path):
    from core_app import hookimpl

    class Broken:
        @hookimpl
        def core_app_blueprint(self, app):
            return 42

    with pytest.raises(PluginDeclarationError) as info:
        create_app(
            config(tmp_path, ["broken_obj"], PLUGIN_ERRORS="raise"),
            plugins={"broken_obj": Broken()},
        )
    assert "not from an installed distribution" in str(info.value)
    assert "'broken_obj'" in str(info.value) and "Fix:" in str(info.value)
