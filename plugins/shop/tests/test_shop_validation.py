"""The shop stores only one-line names and items and one plain address per user: they end
up in receipts that the notifications plugin emails."""

from __future__ import annotations

import pytest

EVIL = "evil@attacker.example"
USER = {"name": "Ann", "email": "ann@example.org"}


@pytest.fixture
def core_app_plugins():
    return ["shop"]


@pytest.mark.parametrize(
    "name",
    [
        "Ann\r\nBcc: " + EVIL,
        "Ann\nSmith",
        "Ann\rSmith",
        "Ann\x00",
        "Ann\u2028Smith",
        "Ann\x85Smith",
        "=?utf-8?q?Ann=0D=0ABcc:_evil?=",
        "\nAnn",
    ],
)
def test_a_name_with_line_breaks_control_characters_or_encoded_words_is_refused(
    core_app_client, name
):
    response = core_app_client.post("/api/shop/users", json={**USER, "name": name})
    assert response.status_code == 400, response.json
    assert set(response.json["fields"]) == {"name"}
    assert core_app_client.get("/api/shop/users").json == {"users": []}


@pytest.mark.parametrize(
    "email",
    [
        f"ann@example.org\r\nBcc: {EVIL}",
        f"ann@example.org\nBcc: {EVIL}",
        f"ann@example.org, {EVIL}",
        f"ann@example.org,{EVIL}",
        f"ann@example.org;{EVIL}",
        "Ann <ann@example.org>",
        f'"{EVIL}"@example.org',
        "=?utf-8?q?ann=0D=0A?=@example.org",
        "ädä@example.org",
        "ann@example",
        "ann",
        "ann @example.org",
        "ann@example.org\x00",
    ],
)
def test_an_email_that_is_not_one_plain_address_is_refused(core_app_client, email):
    response = core_app_client.post("/api/shop/users", json={**USER, "email": email})
    assert response.status_code == 400, response.json
    assert set(response.json["fields"]) == {"email"}
    assert core_app_client.get("/api/shop/users").json == {"users": []}


@pytest.mark.parametrize("email", ["ann@example.org", "Ann.O+shop@exämple.org", "a_b-c@x.example"])
def test_plain_addresses_are_stored(core_app_client, email):
    response = core_app_client.post("/api/shop/users", json={**USER, "email": email})
    assert response.status_code == 201, response.json
    assert response.json["email"] == email


def test_an_item_with_a_line_break_is_refused(core_app_client):
    user = core_app_client.post("/api/shop/users", json=USER).json
    response = core_app_client.post(
        "/api/shop/purchases",
        json={"user_id": user["id"], "item": "tea\r\nBcc: x", "quantity": 1, "price_cents": 1},
    )
    assert response.status_code == 400
    assert set(response.json["fields"]) == {"item"}
    assert core_app_client.get("/api/shop/purchases").json == {"purchases": []}
