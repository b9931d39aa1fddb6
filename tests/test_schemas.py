"""Declared schemas validate the request before the view runs: one 400 for every plugin."""

from __future__ import annotations

import types

import pytest
from fakes import config
from flask import Blueprint
from pydantic import BaseModel, Field

from core_app import FieldError, create_app, hookimpl, invalid, schema


class Line(BaseModel):
    sku: str = Field(min_length=1)
    quantity: int = Field(strict=True, ge=1)


class Order(BaseModel):
    customer: str
    lines: list[Line]


class Paging(BaseModel):
    limit: int = Field(default=10, ge=1, le=100)
    tag: list[str] = []


@pytest.fixture
def calls():
    """What the views saw: a view that must not run leaves this empty."""
    return []


@pytest.fixture
def client(tmp_path, calls):
    blueprint = Blueprint("orders", __name__, url_prefix="/api/orders")

    @blueprint.post("/<int:shop>")
    @schema(body=Order, query=Paging, responses={201: Order})
    def create(shop, body, query):
        calls.append((shop, body, query))
        if body.customer == "taken":
            return invalid([FieldError("body", "customer", "already has an order")])
        return body.model_dump(), 201

    @hookimpl
    def core_app_blueprint(app):
        return blueprint

    plugins = {"orders": types.SimpleNamespace(core_app_blueprint=core_app_blueprint)}
    app = create_app(config(tmp_path, ["orders"], PLUGIN_ERRORS="raise"), plugins=plugins)
    return app.test_client()


ORDER = {"customer": "ann", "lines": [{"sku": "tea", "quantity": 2}]}


def test_a_valid_request_reaches_the_view_as_models(client, calls):
    response = client.post("/api/orders/7?limit=5&tag=a&tag=b", json=ORDER)
    assert response.status_code == 201, response.get_json()
    assert response.get_json() == ORDER
    ((shop, body, query),) = calls
    assert shop == 7
    assert isinstance(body, Order) and body.lines[0].quantity == 2
    assert query == Paging(limit=5, tag=["a", "b"])


def test_an_invalid_request_answers_400_listing_each_field_and_the_view_never_runs(client, calls):
    bad = {"customer": "ann", "lines": [{"sku": "", "quantity": "2"}]}
    response = client.post("/api/orders/7?limit=0", json=bad)
    assert response.status_code == 400
    answer = response.get_json()
    assert answer["error"] == "Bad Request" and answer["status"] == 400
    assert {(e["location"], e["field"]) for e in answer["errors"]} == {
        ("query", "limit"),
        ("body", "lines.0.sku"),
        ("body", "lines.0.quantity"),
    }
    assert set(answer["fields"]) == {"limit", "lines.0.sku", "lines.0.quantity"}
    assert "lines.0.quantity" in answer["message"]
    assert calls == []


@pytest.mark.parametrize(
    ("data", "content_type", "why"),
    [
        ("[1, 2]", "application/json", "required: a JSON object"),
        ("not json", "application/json", "not valid JSON"),
        ("customer=ann", "application/x-www-form-urlencoded", "required: a JSON object"),
        ("[" * 101 + "]" * 101, "application/json", "nested deeper than 100"),
        ('{"customer": "\\ud800", "lines": []}', "application/json", "surrogate"),
    ],
    ids=["array", "malformed", "form", "too-deep", "surrogate"],
)
def test_a_body_that_is_not_a_json_object_answers_400_before_the_view(
    client, calls, data, content_type, why
):
    response = client.post("/api/orders/7", data=data, content_type=content_type)
    assert response.status_code == 400
    answer = response.get_json()
    (error,) = answer["errors"]
    assert error["location"] == "body" and error["field"] == ""
    assert why in error["message"] and why in answer["message"]
    assert calls == []


def test_a_views_own_refusal_has_the_same_shape(client, calls):
    response = client.post("/api/orders/7", json={**ORDER, "customer": "taken"})
    assert response.status_code == 400
    assert response.get_json()["errors"] == [
        {"location": "body", "field": "customer", "message": "already has an order"}
    ]
    assert len(calls) == 1


def test_the_declaration_describes_the_operation(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/api/orders/{shop}"]["post"]
    assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [
        ("shop", "path", True),
        ("limit", "query", False),
        ("tag", "query", False),
    ]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/orders.Order"
    }
    assert set(operation["responses"]) == {"201", "400", "404", "500"}


@pytest.mark.parametrize("bad", [dict, "Order", Order(customer="a", lines=[])])
def test_schema_takes_model_classes_only(bad):
    with pytest.raises(TypeError, match="pydantic model class"):
        schema(body=bad)
    with pytest.raises(TypeError, match="pydantic model class"):
        schema(query=bad)
    if not isinstance(bad, str):  # a description is a valid response
        with pytest.raises(TypeError, match="pydantic model class, a description or None"):
            schema(responses={200: bad})
