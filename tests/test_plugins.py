"""Loading plugins: each way a plugin can be refused, strict and lenient; the shop plugin."""

from __future__ import annotations

import sys

import pytest
from fakes import (
    Refusal,
    blueprint_source,
    check_lenient_skip,
    check_strict_refusal,
    config,
)

from core_app import (
    PluginConflictError,
    PluginDeclarationError,
    PluginDependencyError,
    PluginHookError,
    PluginImportError,
    PluginVersionError,
    create_app,
    discovery,
)

# -- broken setups ---------------------------------------------------------------------
# Each builder installs a healthy plugin `good` beside the broken one(s), and returns
# what must happen. The same setups are checked in strict and lenient mode.


def _good(fake_dist):
    fake_dist("good", blueprint_source("good"), dist_name="core-app-good", version="1.0.0")
    return {"good": "/api/good/ping"}


def duplicate_name(fake_dist):
    one = fake_dist("dup", blueprint_source("dup"), dist_name="core-app-dup-one", version="1.1")
    two = fake_dist("dup", blueprint_source("dup"), dist_name="core-app-dup-two", version="2.2")
    bad = {"dup": one}
    return Refusal(bad, PluginConflictError, _good(fake_dist), ["good", "dup"], [two.name])


def invalid_entry_point_name(fake_dist):
    bad = fake_dist("my-plugin", blueprint_source("my_plugin"), version="0.3")
    return Refusal(
        {"my-plugin": bad},
        PluginDeclarationError,
        _good(fake_dist),
        ["good", "my-plugin"],
        ["identifier"],
        bad_urls=["/api/my_plugin/ping"],
    )


def host_version_excluded(fake_dist):
    bad = fake_dist("future", blueprint_source("future"), requires="core-app>=99", version="9.0")
    return Refusal(
        {"future": bad},
        PluginVersionError,
        _good(fake_dist),
        ["good", "future"],
        ["core-app>=99", discovery.host_version()],
        bad_urls=["/api/future/ping"],
    )


def missing_module(fake_dist):
    bad = fake_dist("ghost", "", target="no_such_module_for_core_app_tests", version="0.1")
    return Refusal(
        {"ghost": bad},
        PluginImportError,
        _good(fake_dist),
        ["good", "ghost"],
        ["no_such_module_for_core_app_tests", "points at nothing"],
    )


def missing_attribute(fake_dist):
    source = blueprint_source("hollow")
    bad = fake_dist("hollow", source, target="{module}:no_such_attribute", version="0.2")
    return Refusal(
        {"hollow": bad},
        PluginImportError,
        _good(fake_dist),
        ["good", "hollow"],
        ["no_such_attribute", "points at nothing"],
        bad_urls=["/api/hollow/ping"],
    )


def module_raises_on_import(fake_dist):
    source = blueprint_source("explodes") + "\nraise RuntimeError('kaboom at import')\n"
    bad = fake_dist("explodes", source, version="0.4")
    return Refusal(
        {"explodes": bad},
        PluginImportError,
        _good(fake_dist),
        ["good", "explodes"],
        ["RuntimeError", "kaboom at import"],
        bad_urls=["/api/explodes/ping"],
    )


def hook_raises(fake_dist):
    body = """
    @hookimpl
    def core_app_blueprint(app):
        raise ValueError("no blueprint today")
    """
    bad = fake_dist("raiser", blueprint_source("raiser", body=body, hook=False), version="0.5")
    return Refusal(
        {"raiser": bad},
        PluginHookError,
        _good(fake_dist),
        ["good", "raiser"],
        ["core_app_blueprint", "ValueError", "no blueprint today"],
        bad_urls=["/api/raiser/ping"],
    )


def hook_returns_wrong_type(fake_dist):
    body = """
    @hookimpl
    def core_app_blueprint(app):
        return "/api/stringly"
    """
    bad = fake_dist("stringly", blueprint_source("stringly", body=body, hook=False))
    return Refusal(
        {"stringly": bad},
        PluginDeclarationError,
        _good(fake_dist),
        ["good", "stringly"],
        ["not a flask.Blueprint"],
        bad_urls=["/api/stringly/ping"],
    )


def misspelt_hook(fake_dist):
    body = """
    @hookimpl
    def core_app_blueprints(app):
        return [blueprint]
    """
    bad = fake_dist("typo", blueprint_source("typo", body=body), version="0.6")
    return Refusal(
        {"typo": bad},
        PluginHookError,
        _good(fake_dist),
        ["good", "typo"],
        ["core_app_blueprints", "does not exist"],
        bad_urls=["/api/typo/ping"],
    )


def wrong_hook_arguments(fake_dist):
    body = """
    @hookimpl
    def core_app_blueprint(app, request):
        return blueprint
    """
    bad = fake_dist("wrongargs", blueprint_source("wrongargs", body=body, hook=False))
    return Refusal(
        {"wrongargs": bad},
        PluginHookError,
        _good(fake_dist),
        ["good", "wrongargs"],
        ["request"],
        bad_urls=["/api/wrongargs/ping"],
    )


def dependency_missing(fake_dist):
    body = """
    @hookimpl
    def core_app_dependencies():
        return {"other": ""}
    """
    bad = fake_dist("needy", blueprint_source("needy", body=body), version="1.3")
    return Refusal(
        {"needy": bad},
        PluginDependencyError,
        _good(fake_dist),
        ["good", "needy"],
        ["'other'", "not installed"],
        bad_urls=["/api/needy/ping"],
    )


def dependency_disabled(fake_dist):
    body = """
    @hookimpl
    def core_app_dependencies():
        return {"good": ""}
    """
    bad = fake_dist("needs_good", blueprint_source("needs_good", body=body), version="1.4")
    fake_dist("bystander", blueprint_source("bystander"))
    _good(fake_dist)
    return Refusal(
        {"needs_good": bad},
        PluginDependencyError,
        {"bystander": "/api/bystander/ping"},
        ["needs_good", "bystander"],  # `good` is installed but not allowed
        ["'good'", "disabled"],
        bad_urls=["/api/needs_good/ping"],
    )


def dependency_wrong_version(fake_dist):
    body = """
    @hookimpl
    def core_app_dependencies():
        return {"good": ">=5"}
    """
    bad = fake_dist("picky", blueprint_source("picky", body=body), version="1.5")
    return Refusal(
        {"picky": bad},
        PluginDependencyError,
        _good(fake_dist),
        ["good", "picky"],
        ["'good'>=5", "core-app-good 1.0.0"],
        bad_urls=["/api/picky/ping"],
    )


def dependency_cycle(fake_dist):
    def needs(other):
        return f"""
        @hookimpl
        def core_app_dependencies():
            return {{"{other}": ""}}
        """

    chicken = fake_dist("chicken", blueprint_source("chicken", body=needs("egg")), version="2.0")
    egg = fake_dist("egg", blueprint_source("egg", body=needs("chicken")), version="3.0")
    return Refusal(
        {"chicken": chicken, "egg": egg},
        PluginDependencyError,
        _good(fake_dist),
        ["good", "chicken", "egg"],
        ["cycle"],
        bad_urls=["/api/chicken/ping", "/api/egg/ping"],
    )


def route_added_when_ready(fake_dist):
    body = """
    @hookimpl
    def core_app_ready(app):
        app.add_url_rule("/sneaky", "sneaky", lambda: "sneaky")
    """
    bad = fake_dist("sneaky", blueprint_source("sneaky", body=body), version="0.7")
    return Refusal(
        {"sneaky": bad},
        PluginConflictError,
        _good(fake_dist),
        ["good", "sneaky"],
        ["'/sneaky'", "outside its prefix"],
        bad_urls=["/api/sneaky/ping", "/sneaky"],
    )


REFUSALS = {
    builder.__name__: builder
    for builder in (
        duplicate_name,
        invalid_entry_point_name,
        host_version_excluded,
        missing_module,
        missing_attribute,
        module_raises_on_import,
        hook_raises,
        hook_returns_wrong_type,
        misspelt_hook,
        wrong_hook_arguments,
        dependency_missing,
        dependency_disabled,
        dependency_wrong_version,
        dependency_cycle,
        route_added_when_ready,
    )
}


def _build(fake_dist, builder_name):
    return REFUSALS[builder_name](fake_dist)


@pytest.mark.parametrize("builder_name", sorted(REFUSALS))
def test_refused_in_strict_mode(fake_dist, tmp_path, builder_name):
    refusal = _build(fake_dist, builder_name)
    with pytest.raises(refusal.error) as info:
        create_app(config(tmp_path, refusal.plugins, PLUGIN_ERRORS="raise"))
    check_strict_refusal(refusal, info.value)


@pytest.mark.parametrize("builder_name", sorted(REFUSALS))
def test_skipped_in_lenient_mode(fake_dist, tmp_path, builder_name):
    refusal = _build(fake_dist, builder_name)
    app = create_app(config(tmp_path, refusal.plugins, PLUGIN_ERRORS="skip"))
    check_lenient_skip(refusal, app)


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


def test_routes_of_a_plugin_that_failed_when_ready_answer_503(fake_dist, tmp_path):
    refusal = _build(fake_dist, "route_added_when_ready")
    app = create_app(config(tmp_path, refusal.plugins, PLUGIN_ERRORS="skip"))
    client = app.test_client()
    response = client.get("/api/sneaky/ping")
    assert response.status_code == 503
    assert response.is_json and response.get_json()["status"] == 503
    assert client.get("/api/good/ping").status_code == 200
    assert "/sneaky" not in {rule.rule for rule in app.url_map.iter_rules()}


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


# -- the example shop plugin, through the pytest plugin's fixtures -----------------------


@pytest.fixture
def core_app_plugins():
    return ["shop"]


def _user(client, name="Ada", email="ada@example.com"):
    response = client.post("/api/shop/users", json={"name": name, "email": email})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_shop_home(client):
    response = client.get("/api/shop/home")
    assert response.status_code == 200
    assert response.get_json()["plugin"] == "shop"


def test_shop_users_create_and_list(client):
    created = _user(client)
    assert created["name"] == "Ada" and created["email"] == "ada@example.com"
    assert isinstance(created["id"], int)
    other = _user(client, "Grace", "grace@example.com")
    assert other["id"] != created["id"]
    listed = client.get("/api/shop/users").get_json()["users"]
    assert listed == [created, other]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"name": "", "email": "x@example.com"}, {"name"}),
        ({"name": "Ada", "email": "not-an-address"}, {"email"}),
        ({"email": "x@example.com"}, {"name"}),
        ({}, {"name", "email"}),
        ({"name": "x" * 1000, "email": "x@example.com"}, {"name"}),
        ([], {"body"}),
    ],
)
def test_shop_users_bad_input_is_400_with_fields(client, body, fields):
    response = client.post("/api/shop/users", json=body)
    assert response.status_code == 400
    payload = response.get_json()
    assert set(payload["fields"]) == fields
    assert client.get("/api/shop/users").get_json()["users"] == []


def test_shop_users_non_json_body_is_400(client):
    response = client.post("/api/shop/users", data="name=Ada", content_type="text/plain")
    assert response.status_code == 400
    assert "body" in response.get_json()["fields"]


def test_shop_duplicate_email_is_400(client):
    _user(client)
    response = client.post("/api/shop/users", json={"name": "Other", "email": "ada@example.com"})
    assert response.status_code == 400
    assert "email" in response.get_json()["fields"]
    assert len(client.get("/api/shop/users").get_json()["users"]) == 1


def test_shop_purchase_without_notifications_is_created_without_receipt(client):
    from core_app_shop.enums import ReceiptStatus

    user = _user(client)
    purchase = {"user_id": user["id"], "item": "teapot", "quantity": 2, "price_cents": 1250}
    response = client.post("/api/shop/purchases", json=purchase)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert {k: created[k] for k in purchase} == purchase
    assert created["receipt"]["status"] == ReceiptStatus.NO_NOTIFICATIONS.value
    listed = client.get("/api/shop/purchases").get_json()["purchases"]
    assert [p["id"] for p in listed] == [created["id"]]
    assert listed[0]["item"] == "teapot"


def test_shop_without_notifications_after_an_app_that_had_it(tmp_path):
    """Tasks of a plugin disabled in this app are not callable here, even when an earlier
    app in the same process imported them (``@shared_task`` registers in every app)."""
    from core_app_notifications.constants import SEND_EMAIL_TASK
    from core_app_shop.enums import ReceiptStatus

    both = create_app(config(tmp_path / "both", ["shop", "notifications"]))
    assert SEND_EMAIL_TASK in both.extensions["celery"].tasks
    shop_only = create_app(config(tmp_path / "shop", ["shop"], PLUGIN_ERRORS="raise"))
    assert SEND_EMAIL_TASK not in shop_only.extensions["celery"].tasks
    client = shop_only.test_client()
    user = _user(client)
    response = client.post(
        "/api/shop/purchases",
        json={"user_id": user["id"], "item": "kettle", "quantity": 1, "price_cents": 900},
    )
    assert response.status_code == 201
    assert response.get_json()["receipt"]["status"] == ReceiptStatus.NO_NOTIFICATIONS.value


def test_shop_purchase_for_unknown_user_is_400(client):
    response = client.post(
        "/api/shop/purchases",
        json={"user_id": 999, "item": "teapot", "quantity": 1, "price_cents": 100},
    )
    assert response.status_code == 400
    assert "user_id" in response.get_json()["fields"]
    assert client.get("/api/shop/purchases").get_json()["purchases"] == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"price_cents": -1}, "price_cents"),
        ({"price_cents": "10"}, "price_cents"),
        ({"item": ""}, "item"),
        ({"user_id": "1"}, "user_id"),
    ],
)
def test_shop_purchase_bad_input_is_400_with_fields(client, change, field):
    user = _user(client)
    purchase = {"user_id": user["id"], "item": "teapot", "quantity": 1, "price_cents": 100}
    response = client.post("/api/shop/purchases", json={**purchase, **change})
    assert response.status_code == 400
    assert field in response.get_json()["fields"]


def test_shop_is_the_only_plugin_loaded(app):
    host = app.extensions["core_app"]
    assert [record.name for record in host.active(builtins=False)] == ["shop"]
    assert host.records["notifications"].status == "disabled"
