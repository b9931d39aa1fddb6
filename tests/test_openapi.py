"""The OpenAPI document: built from the URL map of the host and every active plugin."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import types
from importlib.metadata import version

import pytest
from fakes import config
from flask import Blueprint
from openapi_spec_validator import validate
from pydantic import BaseModel

from core_app import PluginConflictError, create_app, hookimpl, schema
from core_app.openapi import build_document, openapi_document


def plugin(name: str, blueprint: Blueprint, **hooks: object) -> types.SimpleNamespace:
    """A plugin object (registered as if installed) that mounts ``blueprint``."""

    @hookimpl
    def core_app_blueprint(app):
        return blueprint

    return types.SimpleNamespace(core_app_blueprint=core_app_blueprint, **hooks)


def served(client, path="/openapi.json"):
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def operations(document, tag):
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation["tags"] == [tag]
    }


def test_the_document_validates_and_tags_each_example_plugin_with_its_version(tmp_path):
    app = create_app(config(tmp_path, ["shop", "notifications"]))
    document = served(app.test_client())
    validate(document)
    assert document["openapi"].startswith("3.1")
    tags = {tag["name"]: tag for tag in document["tags"]}
    assert list(tags) == ["core_app", "notifications", "shop"]
    for name, dist in (("shop", "core-app-shop"), ("notifications", "core-app-notifications")):
        assert tags[name]["x-distribution"] == dist
        assert tags[name]["x-version"] == version(dist)
        assert f"{dist} {version(dist)}" in tags[name]["description"]
    shop = operations(document, "shop")
    assert set(shop) == {
        ("GET", "/api/shop/home"),
        ("GET", "/api/shop/users"),
        ("POST", "/api/shop/users"),
        ("GET", "/api/shop/purchases"),
        ("POST", "/api/shop/purchases"),
    }
    create = shop[("POST", "/api/shop/users")]
    assert create["operationId"] == "shop.create_user"
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/shop.UserIn"
    }
    assert create["responses"]["400"] == {"$ref": "#/components/responses/ValidationFailed"}
    assert "shop.UserIn" in document["components"]["schemas"]
    assert "Error" in document["components"]["schemas"]
    host = operations(document, "core_app")
    for path in ("/health", "/ready", "/plugins", "/openapi.json", "/docs"):
        assert ("GET", path) in host
    assert host[("GET", "/plugins")]["responses"]["404"] == {
        "$ref": "#/components/responses/NotFound"
    }
    ready = host[("GET", "/ready")]["responses"]["503"]
    assert set(ready) == {"description"}  # its own report, not the error body


def test_an_app_whose_plugins_declare_no_model_never_imports_pydantic(tmp_path):
    script = (
        "import sys\n"
        "from core_app import create_app\n"
        f"app = create_app({{'INSTANCE_PATH': {str(tmp_path)!r}, 'PLUGINS': []}})\n"
        "assert app.test_client().get('/ready').status_code == 200\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert found.stdout.strip() == "[]", found.stdout + found.stderr


def test_routes_without_declarations_are_listed_with_typed_path_parameters(tmp_path):
    blueprint = Blueprint("typed", __name__, url_prefix="/api/typed")
    for rule in (
        "/items/<int:item_id>",
        "/signed/<int(signed=True, max=5):n>",
        "/prices/<float:price>",
        "/users/<uuid:user_id>",
        "/files/<path:name>",
        "/kinds/<any(red, blue):kind>",
        "/codes/<string(length=3):code>",
        "/names/<name>",
    ):
        blueprint.add_url_rule(rule, rule.split("/")[1], lambda **kwargs: kwargs)
    blueprint.add_url_rule("/both", "both", lambda: {}, methods=["GET", "PUT"])
    app = create_app(
        config(tmp_path, ["typed"], PLUGIN_ERRORS="raise"),
        plugins={"typed": plugin("typed", blueprint)},
    )
    document = served(app.test_client())
    validate(document)

    def parameter(path):
        (found,) = document["paths"][path]["get"]["parameters"]
        assert found["in"] == "path" and found["required"] is True
        return found["name"], found["schema"]

    prefix = "/api/typed"
    assert parameter(f"{prefix}/items/{{item_id}}") == (
        "item_id",
        {"type": "integer", "minimum": 0},
    )
    assert parameter(f"{prefix}/signed/{{n}}") == (
        "n",
        {"type": "integer", "maximum": 5},
    )
    assert parameter(f"{prefix}/prices/{{price}}")[1] == {"type": "number", "minimum": 0}
    assert parameter(f"{prefix}/users/{{user_id}}")[1] == {"type": "string", "format": "uuid"}
    assert parameter(f"{prefix}/files/{{name}}")[1]["type"] == "string"
    assert parameter(f"{prefix}/kinds/{{kind}}")[1] == {"type": "string", "enum": ["red", "blue"]}
    assert parameter(f"{prefix}/codes/{{code}}")[1] == {
        "type": "string",
        "minLength": 3,
        "maxLength": 3,
    }
    assert parameter(f"{prefix}/names/{{name}}")[1] == {"type": "string", "minLength": 1}
    both = document["paths"][f"{prefix}/both"]
    assert set(both) == {"get", "put"}  # no head, no options
    assert both["get"]["operationId"] == "typed.both.get"
    assert both["put"]["operationId"] == "typed.both.put"
    items = document["paths"][f"{prefix}/items/{{item_id}}"]["get"]
    assert items["tags"] == ["typed"] and items["operationId"] == "typed.items"
    assert items["responses"]["404"] == {"$ref": "#/components/responses/NotFound"}


def test_the_rules_of_a_plugin_that_failed_after_mounting_are_left_out(tmp_path):
    blueprint = Blueprint("late", __name__, url_prefix="/api/late")
    blueprint.add_url_rule("/ping", "ping", lambda: {})

    @hookimpl
    def core_app_ready(app):
        raise RuntimeError("late failure")

    app = create_app(
        config(tmp_path, ["shop", "late"], PLUGIN_ERRORS="skip"),
        plugins={"late": plugin("late", blueprint, core_app_ready=core_app_ready)},
    )
    assert "/api/late/ping" in {rule.rule for rule in app.url_map.iter_rules()}
    client = app.test_client()
    assert client.get("/api/late/ping").status_code == 503
    document = served(client)
    assert not [path for path in document["paths"] if path.startswith("/api/late")]
    assert "late" not in {tag["name"] for tag in document["tags"]}
    assert "/api/shop/home" in document["paths"]


def test_the_document_moves_with_the_prefix_and_drops_a_disabled_plugin(tmp_path):
    app = create_app(
        config(
            tmp_path,
            None,
            PLUGIN_URL_PREFIXES={"shop": "/store"},
            DISABLED_PLUGINS=["notifications"],
        )
    )
    document = served(app.test_client())
    paths = set(document["paths"])
    assert "/store/home" in paths and "/store/users" in paths
    assert not [path for path in paths if path.startswith(("/api/shop", "/api/notifications"))]
    assert "notifications" not in {tag["name"] for tag in document["tags"]}


def test_the_app_owners_routes_appear_under_the_host_tag(tmp_path):
    app = create_app(config(tmp_path, []))

    @app.get("/owner/<int:n>")
    def owner(n):
        """The owner's own route."""
        return {"n": n}

    operation = served(app.test_client())["paths"]["/owner/{n}"]["get"]
    assert operation["tags"] == ["core_app"]
    assert operation["summary"] == "The owner's own route."


def test_a_route_declared_undocumented_is_served_but_left_out(tmp_path):
    app = create_app(config(tmp_path, []))

    @app.get("/owner/internal")
    @schema(documented=False)
    def internal():
        return {"ok": True}

    client = app.test_client()
    assert client.get("/owner/internal").status_code == 200
    assert client.get("/docs/swagger-ui.css").status_code == 200  # the docs page's files
    paths = served(client)["paths"]
    assert "/owner/internal" not in paths
    assert not [path for path in paths if path.startswith("/docs/")]


def test_openapi_fields_a_view_adds_are_merged_into_its_operation(tmp_path):
    app = create_app(config(tmp_path, []))
    link = {"operationId": "read_item", "parameters": {"sku": "$response.body#/sku"}}

    @app.post("/owner/items")
    @schema(
        body=Item,
        responses={201: Item},
        openapi={"deprecated": True, "responses": {201: {"links": {"read": link}}}},
    )
    def create_item(body):
        return body.model_dump(), 201

    @app.get("/owner/items/<sku>")
    @schema(operation_id="read_item")
    def read_item(sku):
        return {"sku": sku}

    document = served(app.test_client())
    validate(document)
    operation = document["paths"]["/owner/items"]["post"]
    assert operation["deprecated"] is True
    created = operation["responses"]["201"]
    assert created["links"] == {"read": link}
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("Item")  # kept
    assert operation["operationId"] == "create_item" and operation["tags"] == ["core_app"]
    assert set(operation["responses"]) == {"201", "400", "500"}  # no int key beside "201"


@pytest.mark.parametrize("field", ["operationId", "tags"])
def test_openapi_fields_the_host_owns_are_refused(field):
    with pytest.raises(TypeError, match=f"may not set {field}"):
        schema(openapi={field: "x"})


def test_a_queued_email_links_to_its_status(tmp_path):
    document = served(create_app(config(tmp_path, ["notifications"])).test_client())
    queued = document["paths"]["/api/notifications/emails"]["post"]["responses"]["202"]
    (link,) = queued["links"].values()
    status = document["paths"]["/api/notifications/emails/{task_id}"]["get"]
    assert link["operationId"] == status["operationId"]
    assert set(link["parameters"]) == {p["name"] for p in status["parameters"]}
    ref = queued["content"]["application/json"]["schema"]["$ref"]
    body = document["components"]["schemas"][ref.rpartition("/")[2]]
    assert link["parameters"]["task_id"] == "$response.body#/task_id"
    assert "task_id" in body["properties"]


def test_the_document_is_built_once_per_app(tmp_path):
    app = create_app(config(tmp_path, ["shop"]))
    first = openapi_document(app)
    assert openapi_document(app) is first
    assert build_document(app) == first  # the kept one is what a fresh build gives


class Item(BaseModel):
    sku: str


def _item_plugin(name, operation_id=None):
    blueprint = Blueprint(name, __name__, url_prefix=f"/api/{name}")

    @blueprint.post("/items")
    @schema(body=Item, responses={201: Item}, operation_id=operation_id)
    def create(body):
        return body.model_dump(), 201

    return plugin(name, blueprint)


def test_model_components_are_named_per_plugin(tmp_path):
    app = create_app(
        config(tmp_path, ["alpha", "beta"]),
        plugins={"alpha": _item_plugin("alpha"), "beta": _item_plugin("beta")},
    )
    document = served(app.test_client())
    validate(document)
    schemas = document["components"]["schemas"]
    assert "alpha.Item" in schemas and "beta.Item" in schemas
    beta = document["paths"]["/api/beta/items"]["post"]
    assert beta["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/beta.Item"
    }


def test_a_declared_operation_id_another_plugin_uses_is_refused_naming_both(tmp_path):
    plugins = {"alpha": _item_plugin("alpha", "addItem"), "beta": _item_plugin("beta", "addItem")}
    with pytest.raises(PluginConflictError) as refused:
        create_app(config(tmp_path / "strict", plugins, PLUGIN_ERRORS="raise"), plugins=plugins)
    message = str(refused.value)
    assert "'beta'" in message and "plugin 'alpha'" in message and "addItem" in message

    app = create_app(config(tmp_path / "lenient", plugins, PLUGIN_ERRORS="skip"), plugins=plugins)
    host = app.extensions["core_app"]
    assert host.records["alpha"].active and host.records["beta"].failed
    document = served(app.test_client())
    assert document["paths"]["/api/alpha/items"]["post"]["operationId"] == "addItem"
    assert "/api/beta/items" not in document["paths"]


def test_two_views_of_one_plugin_declaring_one_operation_id_are_refused(tmp_path):
    blueprint = Blueprint("twice", __name__, url_prefix="/api/twice")
    blueprint.add_url_rule("/a", "a", schema(operation_id="same")(lambda: {}))
    blueprint.add_url_rule("/b", "b", schema(operation_id="same")(lambda: {}))
    with pytest.raises(PluginConflictError, match=r"which its view twice\.a already uses"):
        create_app(
            config(tmp_path, ["twice"], PLUGIN_ERRORS="raise"),
            plugins={"twice": plugin("twice", blueprint)},
        )


def test_a_declared_operation_id_on_several_methods_gets_each_method(tmp_path):
    blueprint = Blueprint("multi", __name__, url_prefix="/api/multi")
    view = schema(operation_id="thing")(lambda: {})
    blueprint.add_url_rule("/thing", "thing", view, methods=["GET", "PUT"])
    app = create_app(
        config(tmp_path, ["multi"], PLUGIN_ERRORS="raise"),
        plugins={"multi": plugin("multi", blueprint)},
    )
    item = served(app.test_client())["paths"]["/api/multi/thing"]
    assert (item["get"]["operationId"], item["put"]["operationId"]) == ("thing.get", "thing.put")


def test_a_declared_operation_id_equal_to_another_plugins_endpoint_is_refused(tmp_path):
    plugins = {"alpha": _item_plugin("alpha"), "beta": _item_plugin("beta", "alpha.create")}
    with pytest.raises(PluginConflictError, match=r"alpha\.create"):
        create_app(config(tmp_path, plugins, PLUGIN_ERRORS="raise"), plugins=plugins)


def _production(monkeypatch):
    monkeypatch.setenv("CORE_APP_ENV", "production")
    monkeypatch.setenv("CORE_APP_SECRET_KEY", secrets.token_hex())
    monkeypatch.setenv("CORE_APP_ALLOW_EMBEDDED_BROKER", "true")
    monkeypatch.setenv("CORE_APP_DATABASE_ALLOW_SQLITE", "true")


def test_the_document_and_the_page_are_off_in_production_unless_exposed(tmp_path, monkeypatch):
    _production(monkeypatch)
    hidden = create_app(config(tmp_path / "hidden", ["shop"])).test_client()
    for path in ("/openapi.json", "/docs"):
        response = hidden.get(path)
        assert response.status_code == 404
        assert set(response.get_json()) == {"error", "message", "status"}

    monkeypatch.setenv("CORE_APP_EXPOSE_API_DOCS", "true")
    shown = create_app(config(tmp_path / "shown", ["shop"])).test_client()
    assert "/api/shop/home" in served(shown)["paths"]
    assert shown.get("/docs").status_code == 200


def test_the_document_and_the_page_move_with_their_settings(tmp_path):
    app = create_app(config(tmp_path, [], OPENAPI_URL="/meta/api.json", API_DOCS_URL="/meta/docs"))
    client = app.test_client()
    document = served(client, "/meta/api.json")
    assert "/meta/api.json" in document["paths"] and "/meta/docs" in document["paths"]
    assert client.get("/openapi.json").status_code == 404
    assert client.get("/meta/docs").status_code == 200


@pytest.mark.parametrize(
    ("prefix", "settings", "taken"),
    [
        ("/openapi.json", {}, "/openapi.json"),
        ("/docs", {}, "/docs"),
        ("/meta", {"OPENAPI_URL": "/meta/openapi.json"}, "/meta/openapi.json"),
        ("/help", {"API_DOCS_URL": "/help/api"}, "/help/api"),
    ],
)
def test_a_plugin_over_the_document_or_the_page_is_refused(tmp_path, prefix, settings, taken):
    blueprint = Blueprint("grabby", __name__, url_prefix=prefix)
    blueprint.add_url_rule("/x", "x", lambda: {})
    with pytest.raises(PluginConflictError, match=f"covers the host route '{taken}'"):
        create_app(
            config(tmp_path, ["grabby"], PLUGIN_ERRORS="raise", **settings),
            plugins={"grabby": plugin("grabby", blueprint)},
        )


@pytest.mark.parametrize("bad", ["openapi.json", "/", "/api/<name>", 7])
def test_a_document_path_that_is_not_a_fixed_path_is_refused(tmp_path, bad):
    from core_app import ConfigError

    with pytest.raises(ConfigError, match="OPENAPI_URL"):
        create_app(config(tmp_path, [], OPENAPI_URL=bad))


def test_the_openapi_command_writes_the_served_document(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from core_app.cli import make_cli

    monkeypatch.setenv("CORE_APP_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("CORE_APP_PLUGINS", "shop,notifications")
    output = tmp_path / "openapi.json"
    result = CliRunner().invoke(make_cli(), ["openapi", "--output", str(output)])
    assert result.exit_code == 0, result.output
    written = json.loads(output.read_text())
    printed = CliRunner().invoke(make_cli(), ["openapi"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output) == written
    app = create_app(config(tmp_path / "served", ["shop", "notifications"]))
    assert served(app.test_client()) == written
