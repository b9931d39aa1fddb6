"""Mounting: prefixes, overrides, who keeps a contested place, app-wide registrations.

Every overlap refused (strict) or skipped (lenient) is a scenario of broken_plugins.py,
run by test_broken_plugins.py."""

from __future__ import annotations

import gc
import json
import runpy
import sys
import textwrap
import time
import types

import pytest
from broken_plugins import SCENARIOS
from fakes import blueprint_source, config
from flask import Blueprint
from werkzeug.routing import Rule

from core_app import PluginConflictError, create_app, hookimpl
from core_app.doctor import format_report, inspect_plugins
from core_app.hostapp import MOUNTED_FILE
from core_app.mounting import Mounter
from core_app.roles import BEAT, Role
from core_app.routes import Owners, Route


@pytest.mark.parametrize("name", ["prefix_same_as_another", "rule_of_another_plugin"])
def test_conflict_error_names_both_sides(fake_dist, tmp_path, name):
    scenario = SCENARIOS[name](fake_dist)
    with pytest.raises(PluginConflictError) as info:
        create_app(config(tmp_path, scenario.plugins, PLUGIN_ERRORS="raise"))
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


# -- rules compared as Werkzeug matches them -------------------------------------------


def _route(rule, *methods):
    return Route.of(Rule(rule, methods=list(methods or ["GET"])))


def test_rules_that_match_the_same_requests_are_one_rule():
    owners = Owners()
    owners.claim("alpha", [_route("/a/<y>"), _route("/b/", "POST")])
    assert owners.clash(_route("/a/<int:x>"), "beta") == ("alpha", "GET", "/a/<y>")
    assert owners.clash(_route("//a///<uuid:z>/"), "beta") == ("alpha", "GET", "/a/<y>")
    assert owners.clash(_route("/b", "POST", "PUT"), "beta") == ("alpha", "POST", "/b/")
    assert owners.clash(Route.of(Rule("/b")), "beta") is not None  # every method
    assert owners.clash(_route("/b"), "beta") is None  # another method
    assert owners.clash(_route("/a/<y>/c"), "beta") is None  # another path
    assert owners.clash(_route("/a/<int:x>"), "alpha") is None  # its own


def test_a_route_reaches_a_prefix_through_its_variables():
    assert _route("/api/<name>/home").reaches("/api/shop")
    assert _route("/<path:rest>").reaches("/api/shop")
    assert _route("/api//shop").reaches("/api/shop")
    assert not _route("/api/<name>").reaches("/api/shop/v1")
    assert not _route("/api/other/<name>").reaches("/api/shop")
    assert _route("/api//shop/x").inside("/api/shop")
    assert not _route("/api/<name>/x").inside("/api/shop")


def _home(name):
    return f"""
    @blueprint.get("/home")
    def home():
        return {{"plugin": {name!r}, "home": True}}
    """


def test_a_prefix_with_repeated_slashes_cannot_take_the_routes_it_matches(fake_dist, tmp_path):
    """/api//shop matches the same requests as /api/shop (Werkzeug merges slashes)."""
    fake_dist("clash", blueprint_source("clash", "/api//shop", body=_home("clash")))
    create_app(config(tmp_path, ["shop"], PLUGIN_ERRORS="skip"))  # shop served first

    with pytest.raises(PluginConflictError) as info:
        create_app(config(tmp_path, ["shop", "clash"], PLUGIN_ERRORS="raise"))
    assert info.value.plugin == "clash" and "'shop'" in (info.value.other or "")
    assert "'/api/shop'" in str(info.value)

    app = create_app(config(tmp_path, ["shop", "clash"], PLUGIN_ERRORS="skip"))
    home = app.test_client().get("/api/shop/home").get_json()
    assert home["plugin"] == "shop" and "home" not in home
    records = app.extensions["core_app"].records
    assert records["clash"].failed and records["shop"].active
    assert "served there at the previous start" in records["clash"].error.message
    assert not any("clash" in rule.endpoint for rule in app.url_map.iter_rules())


def test_a_clash_with_another_plugins_variable_route_names_both(fake_dist, tmp_path):
    alpha = """
    @blueprint.get("/<name>")
    def named(name):
        return {"plugin": "alpha", "name": name}
    """
    beta = """
    @hookimpl
    def core_app_ready(app):
        app.add_url_rule("/api/alpha/<int:number>", "number", lambda number: {"n": number})
    """
    fake_dist("alpha", blueprint_source("alpha", body=alpha))
    fake_dist("beta", blueprint_source("beta", body=beta))
    with pytest.raises(PluginConflictError) as info:
        create_app(config(tmp_path, ["alpha", "beta"], PLUGIN_ERRORS="raise"))
    assert info.value.plugin == "beta" and info.value.other == "plugin 'alpha'"
    message = str(info.value)
    assert "GET /api/alpha/<int:number>" in message and "(as /api/alpha/<name>)" in message


# -- routes a plugin adds from its hooks -----------------------------------------------

_DIRECT = """
    from werkzeug.routing import Rule as _Rule


    def _view():
        return {{"plugin": "grabbed"}}


    def _add_directly(app, rule):
        app.url_map.add(_Rule(rule, endpoint="grabbed", methods=["GET"]))
        app.view_functions["grabbed"] = _view
"""

#: How a plugin adds ``{rule}`` to the app itself: from which hook, by which call.
HOOK_ROUTES = {
    "add_url_rule in core_app_blueprint": """
    @hookimpl
    def core_app_blueprint(app):
        app.add_url_rule({rule!r}, "grabbed", lambda: {{"plugin": "grabbed"}})
        return blueprint
    """,
    "add_url_rule in core_app_ready": """
    @hookimpl
    def core_app_ready(app):
        app.add_url_rule({rule!r}, "grabbed", lambda: {{"plugin": "grabbed"}})
    """,
    "url_map.add in blueprint.record": _DIRECT
    + """

    blueprint.record(lambda state: _add_directly(state.app, {rule!r}))
    """,
    "url_map.add in core_app_ready": _DIRECT
    + """

    @hookimpl
    def core_app_ready(app):
        _add_directly(app, {rule!r})
    """,
}


def _hook_route_source(name, how, rule):
    body = textwrap.dedent(HOOK_ROUTES[how]).format(rule=rule)
    return blueprint_source(name, body=body, hook="core_app_blueprint(app)" not in body)


@pytest.mark.parametrize("how", sorted(HOOK_ROUTES))
def test_a_route_added_from_a_hook_outside_the_prefix_is_refused(fake_dist, tmp_path, how):
    fake_dist("grabber", _hook_route_source("grabber", how, "/owned"), version="3.1")
    fake_dist("good", blueprint_source("good"))
    plugins = ["grabber", "good"]
    with pytest.raises(PluginConflictError) as info:
        create_app(config(tmp_path / "strict", plugins, PLUGIN_ERRORS="raise"))
    assert info.value.plugin == "grabber"
    assert "'/owned'" in str(info.value) and "outside its prefix" in str(info.value)

    app = create_app(config(tmp_path / "lenient", plugins, PLUGIN_ERRORS="skip"))
    assert app.extensions["core_app"].records["grabber"].failed
    assert "/owned" not in {rule.rule for rule in app.url_map.iter_rules()}
    assert "grabbed" not in app.view_functions
    client = app.test_client()
    assert client.get("/owned").status_code == 404
    assert client.get("/api/good/ping").get_json() == {"plugin": "good"}


@pytest.mark.parametrize("how", sorted(HOOK_ROUTES))
def test_a_route_added_from_a_hook_inside_the_prefix_is_the_plugins(fake_dist, tmp_path, how):
    fake_dist("adder", _hook_route_source("adder", how, "/api/adder/extra"))
    app = create_app(config(tmp_path, ["adder"], PLUGIN_ERRORS="raise"))
    assert app.test_client().get("/api/adder/extra").get_json() == {"plugin": "grabbed"}
    routes = app.extensions["core_app"].records["adder"].routes
    assert routes == ["/api/adder/extra", "/api/adder/ping"]


@pytest.mark.parametrize("hook", ["core_app_blueprint", "core_app_ready"])
def test_an_app_wide_error_handler_registered_from_a_hook_is_refused(fake_dist, tmp_path, hook):
    body = f"""
    @hookimpl
    def {hook}(app):
        app.register_error_handler(404, lambda error: ("<h1>nothing here</h1>", 404))
        app.register_error_handler(KeyError, lambda error: ("<h1>oops</h1>", 500))
        {"return blueprint" if hook == "core_app_blueprint" else ""}
    """
    source = blueprint_source("handler", body=body, hook=hook != "core_app_blueprint")
    fake_dist("handler", source)
    fake_dist("good", blueprint_source("good"))
    with pytest.raises(PluginConflictError) as info:
        create_app(config(tmp_path / "strict", ["handler", "good"], PLUGIN_ERRORS="raise"))
    assert info.value.plugin == "handler" and "['404', 'KeyError']" in str(info.value)

    app = create_app(config(tmp_path / "lenient", ["handler", "good"], PLUGIN_ERRORS="skip"))
    assert app.extensions["core_app"].records["handler"].failed
    missing = app.test_client().get("/no/such/page")
    assert missing.status_code == 404 and missing.is_json
    assert KeyError not in app.error_handler_spec[None][None]


# -- a blueprint is checked on a throwaway app before it reaches the real one ----------

#: A blueprint that registers something in every registry Flask has.
EVERYWHERE = """
    from flask import Blueprint as _Blueprint
    from werkzeug.routing import Rule as _Rule

    child = _Blueprint("{name}_child", __name__, url_prefix="/child")


    @child.get("/leaf")
    def {name}_leaf():
        return {{}}


    blueprint.register_blueprint(child)


    @blueprint.cli.command("{name}-command")
    def {name}_command():
        pass


    @blueprint.app_template_filter()
    def {name}_filter(value):
        return value


    @blueprint.app_template_test()
    def {name}_test(value):
        return True


    @blueprint.app_template_global()
    def {name}_global():
        return 1


    @blueprint.app_context_processor
    def {name}_context():
        return {{}}


    @blueprint.before_app_request
    def {name}_before():
        pass


    @blueprint.after_app_request
    def {name}_after(response):
        return response


    @blueprint.teardown_app_request
    def {name}_teardown(error):
        pass


    @blueprint.app_url_value_preprocessor
    def {name}_preprocessor(endpoint, values):
        pass


    @blueprint.app_url_defaults
    def {name}_defaults(endpoint, values):
        pass


    @blueprint.before_request
    def {name}_scoped():
        pass


    def {name}_on_app(state):
        state.app.teardown_appcontext({name}_teardown)
        state.app.shell_context_processor({name}_context)
        state.app.url_map.add(_Rule("/api/{name}/direct", endpoint="{name}_direct"))
        state.app.view_functions["{name}_direct"] = {name}_global


    blueprint.record({name}_on_app)
"""

REFUSED = """

@blueprint.app_errorhandler(404)
def not_found(error):
    return "<h1>nothing here</h1>", 404
"""


def _traces(app, module):
    """Names of the functions of ``module`` found anywhere in the app."""
    found = set()

    def visit(value, depth):
        if getattr(value, "__module__", None) == module and hasattr(value, "__name__"):
            found.add(value.__name__)
        if depth == 0:
            return
        if isinstance(value, dict):
            for key, inner in value.items():
                visit(key, depth - 1)
                visit(inner, depth - 1)
        elif isinstance(value, (list, tuple, set)):
            for inner in value:
                visit(inner, depth - 1)

    for value in vars(app).values():
        visit(value, 4)
    for kind in ("filters", "tests", "globals"):
        visit(getattr(app.jinja_env, kind), 1)
    for group in app.cli.commands.values():
        for command in getattr(group, "commands", {}).values():
            visit(command.callback, 0)
    return found


def test_nothing_of_a_refused_blueprint_reaches_the_app(fake_dist, tmp_path):
    everywhere = textwrap.dedent(EVERYWHERE)
    refused = fake_dist(
        "beta", blueprint_source("beta", body=everywhere.format(name="beta") + REFUSED)
    )
    kept = fake_dist("gamma", blueprint_source("gamma", body=everywhere.format(name="gamma")))
    app = create_app(config(tmp_path, ["beta", "gamma"], PLUGIN_ERRORS="skip"))
    records = app.extensions["core_app"].records
    assert records["beta"].failed and records["gamma"].active

    # What the accepted twin left everywhere shows where to look...
    everything = "leaf command filter test global context before after teardown"
    everything += " preprocessor defaults scoped"
    assert _traces(app, kept.module) >= {f"gamma_{what}" for what in everything.split()}
    assert {"gamma", "gamma.gamma_child"} <= set(app.blueprints)
    assert "gamma-command" in app.cli.commands["gamma"].commands
    assert "gamma_filter" in app.jinja_env.filters
    # ...and the refused one left nothing there.
    assert _traces(app, refused.module) == set()
    assert not [name for name in app.blueprints if name.startswith("beta")]
    assert not [e for e in app.view_functions if e.startswith("beta")]
    assert not [r.rule for r in app.url_map.iter_rules() if "beta" in r.rule + r.endpoint]
    assert "beta" not in app.cli.commands
    assert not [n for n in app.jinja_env.filters if n.startswith("beta")]
    assert not [n for n in app.jinja_env.tests if n.startswith("beta")]
    assert not [n for n in app.jinja_env.globals if n.startswith("beta")]
    assert app.test_client().get("/no/such/page").is_json


def test_app_wide_registrations_are_shown_in_the_record(fake_dist, tmp_path):
    everywhere = textwrap.dedent(EVERYWHERE).format(name="gamma")
    kept = fake_dist("gamma", blueprint_source("gamma", body=everywhere))
    app = create_app(config(tmp_path, ["gamma"], PLUGIN_ERRORS="raise"))
    module = kept.module
    expected = [
        f"after_app_request: {module}.gamma_after",
        f"app_context_processor: {module}.gamma_context",
        f"app_url_defaults: {module}.gamma_defaults",
        f"app_url_value_preprocessor: {module}.gamma_preprocessor",
        f"before_app_request: {module}.gamma_before",
        f"shell_context_processor: {module}.gamma_context",
        f"teardown_app_request: {module}.gamma_teardown",
        f"teardown_appcontext: {module}.gamma_teardown",
        "template_filter: gamma_filter",
        "template_global: gamma_global",
        "template_test: gamma_test",
        "cli command: gamma",
    ]
    assert sorted(app.extensions["core_app"].records["gamma"].app_hooks) == sorted(expected)
    result = app.test_cli_runner().invoke(args=["plugins", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [row for row in json.loads(result.stdout) if row["name"] == "gamma"]
    assert sorted(row["app_hooks"]) == sorted(expected)


def test_app_wide_hooks_registered_from_a_hook_are_shown_too(fake_dist, tmp_path):
    body = """
    def audit():
        pass


    def shout(value):
        return value.upper()


    @hookimpl
    def core_app_ready(app):
        app.before_request(audit)
        app.add_template_filter(shout)
    """
    dist = fake_dist("auditor", blueprint_source("auditor", body=body))
    app = create_app(config(tmp_path, ["auditor"], PLUGIN_ERRORS="raise"))
    record = app.extensions["core_app"].records["auditor"]
    assert record.app_hooks == [
        f"before_app_request: {dist.module}.audit",
        "template_filter: shout",
    ]


def test_the_doctor_shows_app_wide_hooks(fake_dist):
    body = """
    @blueprint.before_app_request
    def audit():
        pass
    """
    dist = fake_dist("auditor", blueprint_source("auditor", body=body))
    report = format_report(inspect_plugins(["auditor"]))
    assert f"app-wide hooks: before_app_request: {dist.module}.audit" in report, report


def test_a_blueprint_reads_the_app_config_while_it_is_registered(fake_dist, tmp_path):
    body = """
    SEEN = []
    blueprint.record(lambda state: SEEN.append(state.app.config["READER_GREETING"]))
    """
    dist = fake_dist("reader", blueprint_source("reader", body=body))
    create_app(config(tmp_path, ["reader"], PLUGIN_ERRORS="raise", READER_GREETING="hello"))
    assert sys.modules[dist.module].SEEN == ["hello", "hello"]  # probe, then the app


# -- who keeps a place: the plugin that served before ----------------------------------


def test_a_newcomer_never_takes_the_place_of_a_plugin_that_served(fake_dist, tmp_path):
    fake_dist("zebra", blueprint_source("zebra", "/api/place"))
    newcomer = blueprint_source("aardvark", "/api/place/", body=_home("aardvark"))
    fake_dist("aardvark", newcomer, dist_name="core-app-aardvark", version="0.9")
    first = create_app(config(tmp_path, ["zebra"], PLUGIN_ERRORS="skip"))
    mounted = tmp_path / "instance" / MOUNTED_FILE
    assert json.loads(mounted.read_text()) == {"zebra": "/api/place"}

    # aardvark sorts first, and is installed later: zebra keeps its place.
    app = create_app(config(tmp_path, ["aardvark", "zebra"], PLUGIN_ERRORS="skip"))
    records = app.extensions["core_app"].records
    assert records["zebra"].active and records["aardvark"].failed
    error = records["aardvark"].error
    assert error.other == "plugin 'zebra'" and "'/api/place'" in error.message
    assert "core-app-aardvark 0.9" in error.message
    assert app.test_client().get("/api/place/ping").get_json() == {"plugin": "zebra"}
    assert app.test_client().get("/api/place/home").status_code == 404
    assert json.loads(mounted.read_text()) == {"zebra": "/api/place"}
    assert [p.name for p in mounted.parent.iterdir() if p.suffix == ".tmp"] == []
    assert first is not app


def test_when_neither_served_before_neither_is_mounted(fake_dist, tmp_path):
    fake_dist("left", blueprint_source("left", "/api/side"))
    fake_dist("right", blueprint_source("right", "/api/side/right"))
    fake_dist("other", blueprint_source("other", "/api/side/right/more"))
    fake_dist("good", blueprint_source("good"))
    app = create_app(config(tmp_path, ["left", "right", "other", "good"], PLUGIN_ERRORS="skip"))
    records = app.extensions["core_app"].records
    assert records["good"].active
    for name in ("left", "right", "other"):
        assert records[name].failed, name
        error = records[name].error
        assert "Neither served" in error.message
        assert error.other in {f"plugin {other!r}" for other in ("left", "right", "other")}
        assert error.other != f"plugin {name!r}"
    client = app.test_client()
    for url in ("/api/side/ping", "/api/side/right/ping", "/api/side/right/more/ping"):
        assert client.get(url).status_code == 404, url
    assert json.loads((tmp_path / "instance" / MOUNTED_FILE).read_text()) == {"good": "/api/good"}


def test_strict_mode_refuses_a_clash_whoever_served_before(fake_dist, tmp_path):
    fake_dist("alpha", blueprint_source("alpha", "/api/same"))
    fake_dist("beta", blueprint_source("beta", "/api/same"))
    create_app(config(tmp_path, ["beta"], PLUGIN_ERRORS="raise"))
    with pytest.raises(PluginConflictError) as info:
        create_app(config(tmp_path, ["alpha", "beta"], PLUGIN_ERRORS="raise"))
    assert info.value.plugin == "alpha" and info.value.other == "plugin 'beta'"


def test_a_process_that_serves_some_plugins_does_not_rewrite_what_was_mounted(fake_dist, tmp_path):
    fake_dist("alpha", blueprint_source("alpha"))
    fake_dist("beta", blueprint_source("beta"))
    mounted = tmp_path / "instance" / MOUNTED_FILE
    create_app(config(tmp_path, ["alpha", "beta"], PLUGIN_ERRORS="raise"))
    both = {"alpha": "/api/alpha", "beta": "/api/beta"}
    assert json.loads(mounted.read_text()) == both
    create_app(
        config(tmp_path, ["alpha", "beta"], PLUGIN_ERRORS="raise"), role=Role.worker(["alpha"])
    )
    create_app(config(tmp_path, ["alpha", "beta"], PLUGIN_ERRORS="raise"), role=Role(BEAT))
    assert json.loads(mounted.read_text()) == both
    create_app(config(tmp_path, ["alpha"], PLUGIN_ERRORS="raise"))  # beta uninstalled
    assert json.loads(mounted.read_text()) == {"alpha": "/api/alpha"}


# -- the app's own routes (run.py) -----------------------------------------------------


def _owner_app(tmp_path, plugins, body):
    """Run a run.py-like module that adds routes after create_app(); return its app."""
    settings = config(tmp_path, plugins, PLUGIN_ERRORS="raise")
    module = tmp_path / "owner_app.py"
    module.write_text(
        "from core_app import create_app\n\n"
        f"app = create_app({settings!r})\n\n" + textwrap.dedent(body)
    )
    return runpy.run_path(str(module))["app"]


def test_the_app_can_add_its_own_routes_after_create_app(fake_dist, tmp_path):
    fake_dist("good", blueprint_source("good"))
    app = _owner_app(
        tmp_path,
        ["good"],
        """
        @app.route("/ping")
        def ping():
            return {"pong": True}
        """,
    )
    client = app.test_client()
    assert client.get("/ping").get_json() == {"pong": True}
    assert client.get("/api/good/ping").get_json() == {"plugin": "good"}
    assert "/ping" in app.extensions["core_app"].records["core_app"].routes
    # Flask's own rule: no more routes once the app has handled a request.
    with pytest.raises(AssertionError, match="first request"):
        app.add_url_rule("/late", "late", lambda: "late")


@pytest.mark.parametrize(
    ("rule", "plugin", "says"),
    [
        ("/api/good/extra", "good", "'/api/good'"),
        ("/api/<name>/ping", "good", "'/api/good'"),
        ("/api//good", "good", "'/api/good'"),
        ("/health/", "core_app", "GET /health"),
    ],
)
def test_the_apps_own_route_cannot_reach_into_a_plugin(fake_dist, tmp_path, rule, plugin, says):
    fake_dist("good", blueprint_source("good"), dist_name="core-app-good", version="4.2")
    body = f"""
    @app.route({rule!r})
    def mine(**values):
        return {{"mine": True}}
    """
    with pytest.raises(PluginConflictError) as info:
        _owner_app(tmp_path, ["good"], body)
    assert info.value.plugin == plugin and "run.py" in (info.value.other or "")
    assert says in str(info.value)
    if plugin == "good":
        assert "core-app-good 4.2" in str(info.value)


# -- start-up stays O(N) ---------------------------------------------------------------


def _many_plugins(count):
    plugins = {}
    for i in range(count):
        name = f"many{i:04d}"
        blueprint = Blueprint(name, __name__, url_prefix=f"/api/{name}")
        blueprint.add_url_rule("/items/<int:item>", "item", lambda item: {"item": item})
        module = types.ModuleType(name)
        module.core_app_blueprint = hookimpl(lambda app, blueprint=blueprint: blueprint)
        plugins[name] = module
    return plugins


def test_mounting_costs_the_same_per_plugin_for_many_plugins(tmp_path, monkeypatch):
    """Each plugin costs a lookup per route and prefix, not a pass over the others."""
    spent = []
    mount_all = Mounter.mount_all

    def timed(self):
        started = time.process_time()
        mount_all(self)
        spent.append(time.process_time() - started)

    monkeypatch.setattr(Mounter, "mount_all", timed)
    per_plugin = {}
    for count in (40, 640):
        runs = []
        for run in range(2):
            plugins = _many_plugins(count)
            settings = config(tmp_path / f"{count}-{run}", list(plugins), PLUGIN_ERRORS="raise")
            gc.disable()  # a collection walks every object alive: O(N) each time
            try:
                create_app(settings, plugins=plugins)
            finally:
                gc.enable()
            runs.append(spent.pop())
        per_plugin[count] = min(runs) / count
    assert per_plugin[640] < 2 * per_plugin[40], per_plugin
