"""The notifications plugin's own tests, with the fixtures core_app gives plugin authors.

``core_app_app``/``core_app_client`` use the embedded broker in a temporary instance
folder; ``redis_app`` and ``core_app_worker`` use a real redis-server and a real worker
process (started as production starts one: ``python -m core_app worker``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core_app.testing import wait_until

EMAIL = {"to": "ada@example.com", "subject": "Welcome", "body": "Hello, Ada."}


@pytest.fixture
def core_app_plugins():
    return ["notifications"]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"to", "subject", "body"}),
        ({**EMAIL, "to": "ada"}, {"to"}),
        ({**EMAIL, "to": 42}, {"to"}),
        ({**EMAIL, "subject": "x" * 201}, {"subject"}),
        ({**EMAIL, "body": None}, {"body"}),
    ],
)
def test_an_invalid_email_is_refused_with_400_json(core_app_client, body, fields):
    response = core_app_client.post("/api/notifications/emails", json=body)
    assert response.status_code == 400
    assert response.json["error"] == "Bad Request"
    assert set(response.json["fields"]) == fields


@pytest.mark.parametrize("data", ["not json", "[1, 2]"])
def test_a_body_that_is_not_a_json_object_is_refused(core_app_client, data):
    response = core_app_client.post(
        "/api/notifications/emails", data=data, content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON object" in response.json["message"]


@pytest.mark.parametrize("task_id", ["no-such-task", "0f3c2a52b4a54d4c8b1b2a4f7d7f2e11"])
def test_an_id_this_api_never_issued_is_404(core_app_client, task_id):
    response = core_app_client.get(f"/api/notifications/emails/{task_id}")
    assert response.status_code == 404
    assert response.json["error"] == "Not Found"


def test_an_issued_id_that_no_worker_consumed_yet_is_pending_since_it_was_queued(
    core_app_client, make_app
):
    queued = core_app_client.post("/api/notifications/emails", json=EMAIL)  # no worker runs here
    assert queued.status_code == 202
    body = core_app_client.get(queued.json["status_url"]).json
    assert body["task_id"] == queued.json["task_id"] and body["state"] == "PENDING"
    age = datetime.now(UTC) - datetime.fromisoformat(body["queued_at"])
    assert timedelta(0) <= age < timedelta(minutes=1), body

    # An id signed with another SECRET_KEY, or altered, was not issued by this app.
    # The signature's first character is altered: all six of its bits count, whereas the last
    # character of an unpadded base64 signature has bits a decoder ignores ("A" and "B" can
    # decode alike, and then the "altered" id is still valid).
    url = queued.json["status_url"]
    head, signature = url.rsplit(".", 1)
    altered = f"{head}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    assert core_app_client.get(altered).status_code == 404
    other_key = make_app(SECRET_KEY="another key, of another deployment").test_client()
    assert other_key.get(url).status_code == 404


def test_a_queued_email_is_written_to_the_outbox_by_a_worker(redis_app, core_app_worker):
    client = redis_app.test_client()
    response = client.post("/api/notifications/emails", json=EMAIL)
    assert response.status_code == 202
    status_url = response.json["status_url"]
    assert response.headers["Location"] == status_url

    def finished():
        body = client.get(status_url).json
        return body if body["state"] in ("SUCCESS", "FAILURE") else None

    body = wait_until(finished, timeout=20)
    assert body["state"] == "SUCCESS", body
    eml = Path(redis_app.instance_path) / "outbox" / f"{response.json['task_id']}.eml"
    assert body["result"]["file"] == eml.name  # within the outbox: no server path leaks
    assert str(redis_app.instance_path) not in str(body)
    text = eml.read_text()
    # The signed id is the Message-ID's key: the same on every attempt of this email.
    assert f"Message-ID: <{response.json['task_id']}@core-app.local>" in text
    assert "To: ada@example.com" in text
    assert "Subject: Welcome" in text
    assert "Hello, Ada." in text
