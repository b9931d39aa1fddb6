"""The example shop plugin's API (users, purchases, receipts without notifications),
through the fixtures core_app ships."""

from __future__ import annotations

import pytest
from fakes import config

from core_app import create_app


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
