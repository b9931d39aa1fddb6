"""Every error is JSON with the right status, and leaks no traceback or file path."""

from __future__ import annotations

import json
import secrets

import pytest
from fakes import blueprint_source, config

from core_app import create_app, discovery
from core_app.migrations import upgrade_all

SECRET = "internal detail 7c1e: do not show"

BODY = f"""
from flask import request


@blueprint.post("/echo")
def echo():
    return {{"size": len(request.get_data())}}


@blueprint.get("/crash")
def crash():
    raise RuntimeError({SECRET!r})


@blueprint.get("/lookup")
def lookup():
    return {{"value": {{}}["missing"]}}
"""


@pytest.fixture
def app(fake_dist, tmp_path):
    fake_dist("errors", blueprint_source("errors", body=BODY))
    return create_app(config(tmp_path, ["errors"], PLUGIN_ERRORS="raise", MAX_CONTENT_LENGTH=1024))


def _assert_clean_json_error(response, status, tmp_path):
    assert response.status_code == status
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert body["status"] == status
    assert body["error"] and body["message"]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    assert ".py" not in text
    assert str(tmp_path) not in text
    assert "/work/" not in text and "site-packages" not in text
    return body


def test_404_is_json(app, tmp_path):
    body = _assert_clean_json_error(app.test_client().get("/no/such/route"), 404, tmp_path)
    assert body["error"] == "Not Found"


def test_404_inside_a_plugin_prefix_is_json(app, tmp_path):
    _assert_clean_json_error(app.test_client().get("/api/errors/nothing"), 404, tmp_path)


def test_405_is_json_and_keeps_allow(app, tmp_path):
    response = app.test_client().post("/health")
    body = _assert_clean_json_error(response, 405, tmp_path)
    assert body["error"] == "Method Not Allowed"
    assert "GET" in response.headers["Allow"]


def test_413_is_json(app, tmp_path):
    client = app.test_client()
    small = client.post("/api/errors/echo", data=b"x" * 100)
    assert small.status_code == 200 and small.get_json() == {"size": 100}
    big = client.post("/api/errors/echo", data=b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1))
    _assert_clean_json_error(big, 413, tmp_path)


@pytest.mark.parametrize("testing", [False, True])
@pytest.mark.parametrize("url", ["/api/errors/crash", "/api/errors/lookup"])
def test_500_is_json_without_details(app, tmp_path, testing, url):
    app.config["TESTING"] = testing
    response = app.test_client().get(url)
    body = _assert_clean_json_error(response, 500, tmp_path)
    text = response.get_data(as_text=True)
    assert SECRET not in text and "RuntimeError" not in text and "KeyError" not in text
    assert body["error"] == "Internal Server Error"


def test_500_is_logged_with_traceback(app, caplog):
    with caplog.at_level("ERROR"):
        app.test_client().get("/api/errors/crash")
    assert any(r.exc_info and SECRET in str(r.exc_info[1]) for r in caplog.records)


def test_health_is_json(app):
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.is_json
    assert response.get_json() == {"status": "ok", "version": discovery.host_version()}


def test_ready_is_json(app):
    response = app.test_client().get("/ready")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["broker"] == {"ok": True}
    assert body["plugins"]["loaded"] == ["errors"]
    assert body["plugins"]["failed"] == []


@pytest.mark.parametrize("env", ["development", "production"])
def test_ready_is_degraded_but_200_when_a_plugin_failed_in_lenient_mode(fake_dist, tmp_path, env):
    """The serving plugins still serve: load balancers keep the process (200), and the
    status says what is missing."""
    fake_dist("errors", blueprint_source("errors", body=BODY))
    fake_dist("broken", "raise RuntimeError('kaboom')")
    app = create_app(
        config(
            tmp_path,
            ["errors", "broken"],
            PLUGIN_ERRORS="skip",
            ENV=env,
            SECRET_KEY=secrets.token_hex(),
            ALLOW_EMBEDDED_BROKER=True,
        )
    )
    if env == "production":  # never migrated implicitly there: the release step
        upgrade_all(app, app.extensions["core_app"])
    ready = app.test_client().get("/ready")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "degraded"
    assert body["checks"]["broker"]["ok"] is True
    assert body["plugins"]["loaded"] == ["errors"]
    assert [entry["name"] for entry in body["plugins"]["failed"]] == ["broken"]
    assert ("kaboom" in json.dumps(body)) is (env == "development")  # details: development
    assert app.test_client().post("/api/errors/echo", data=b"x").status_code == 200


# -- JSON bodies that parse but no route can use: 400, decided by the host -------------

#: ~1,000 levels: json.loads raises RecursionError (not ValueError) before the fix.
DEEP = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000
#: Deep enough to parse, too deep to pass MAX_JSON_DEPTH (and to echo safely).
MEDIUM = "[" * 500 + "]" * 500
#: Lone surrogates: as a JSON escape, as a key, and encoded in the raw bytes.
LONE_ESCAPE = '{"name": "\\ud800", "email": "ann@example.org"}'
LONE_KEY = '{"\\udfff": 1, "name": "Ann", "email": "ann@example.org"}'
LONE_RAW = b'{"name": "\xed\xa0\x80", "email": "ann@example.org"}'

BAD_JSON = {
    "deep array": DEEP,
    "deep object": DEEP_OBJECT,
    "medium": MEDIUM,
    "lone escape": LONE_ESCAPE,
    "lone key": LONE_KEY,
    "lone raw": LONE_RAW,
}

JSON_BODY = """
from flask import request


@blueprint.post("/json")
def takes_json():
    return {"got": request.get_json()}


@blueprint.post("/optional")
def optional_json():
    return {"silent": request.get_json(silent=True)}
"""


@pytest.fixture
def json_app(fake_dist, tmp_path):
    fake_dist("jsonic", blueprint_source("jsonic", body=JSON_BODY))
    return create_app(config(tmp_path, ["jsonic"], PLUGIN_ERRORS="raise"))


@pytest.mark.parametrize("body", list(BAD_JSON.values()), ids=list(BAD_JSON))
def test_unusable_json_is_a_400_from_the_host(json_app, tmp_path, body):
    """get_json() raises the host's 400 (not a RecursionError or UnicodeEncodeError
    500); get_json(silent=True) returns None, as for any invalid JSON."""
    client = json_app.test_client()
    response = client.post("/api/jsonic/json", data=body, content_type="application/json")
    body_json = _assert_clean_json_error(response, 400, tmp_path)
    assert set(body_json) == {"error", "message", "status"}
    assert "JSON body" in body_json["message"], body_json
    silent = client.post("/api/jsonic/optional", data=body, content_type="application/json")
    assert silent.status_code == 200 and silent.get_json() == {"silent": None}


def test_max_json_depth_is_a_setting_and_counts_nesting_not_brackets(json_app, tmp_path):
    app = create_app(config(tmp_path / "three", ["jsonic"], MAX_JSON_DEPTH=3))
    client = app.test_client()
    three = client.post("/api/jsonic/json", json=[[[1]]])
    assert three.status_code == 200 and three.get_json() == {"got": [[[1]]]}
    four = client.post("/api/jsonic/json", json=[[[[1]]]])
    assert four.status_code == 400 and "deeper than 3" in four.get_json()["message"]

    # With the default limit: what real clients send still parses.
    client = json_app.test_client()
    assert client.post("/api/jsonic/json", json=[[[[1]]]]).status_code == 200
    fine = [
        json.dumps([[{"a": [1, 2, {"b": "c"}]}]] * 300),  # many brackets, little depth
        "[" * 50 + "]" * 50,
        json.dumps({"text": "[" * 300, "quoted": '\\"' + "{" * 300, "list": [[1]] * 300}),
        json.dumps({"emoji": "\U0001f600"}, ensure_ascii=False),
        '{"escaped": "\\\\ud800 is text, not a surrogate"}',
        '["\\ud83d\\ude00"]',  # an escaped surrogate pair is one code point
    ]
    for raw in fine:
        response = client.post("/api/jsonic/json", data=raw, content_type="application/json")
        assert response.status_code == 200, (raw[:60], response.get_json())
    pair = client.post("/api/jsonic/json", data=fine[-1], content_type="application/json")
    assert pair.get_json() == {"got": ["\U0001f600"]}


@pytest.fixture
def example_client(tmp_path):
    app = create_app(config(tmp_path, ["shop", "notifications"], PLUGIN_ERRORS="raise"))
    return app.test_client()


EXAMPLE_ROUTES = ["/api/shop/users", "/api/shop/purchases", "/api/notifications/emails"]


@pytest.mark.parametrize("url", EXAMPLE_ROUTES)
@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["deep array", "deep object"])
def test_example_plugin_routes_answer_400_to_deep_json(example_client, tmp_path, url, body):
    response = example_client.post(url, data=body, content_type="application/json")
    found = _assert_clean_json_error(response, 400, tmp_path)
    assert {"error", "message", "status"} <= set(found)


#: A body each example route would accept, but for a lone surrogate in one text field.
SURROGATE_BODIES = {
    "/api/shop/users": '{"name": "Ann \\ud800", "email": "ann@example.org"}',
    "/api/shop/purchases": '{"user_id": 1, "item": "tea \\udbff", "quantity": 1, "price_cents": 1}',
    "/api/notifications/emails": '{"to": "ann@example.org", "subject": "Hi", "body": "\\udc80"}',
}


@pytest.mark.parametrize("url", list(SURROGATE_BODIES))
@pytest.mark.parametrize("encoded", [False, True], ids=["escaped", "raw bytes"])
def test_example_plugin_routes_answer_400_to_lone_surrogates(
    example_client, tmp_path, url, encoded
):
    """Before the host refused them these reached SQLite (500) or the task queue (202)."""
    user = example_client.post("/api/shop/users", json={"name": "Bo", "email": "bo@example.org"})
    assert user.status_code == 201 and user.get_json()["id"] == 1
    raw = SURROGATE_BODIES[url].encode()
    if encoded:  # the same code point as (invalid) UTF-8 bytes instead of an escape
        value = json.loads(raw)
        raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
        assert b"\\u" not in raw and b"\xed" in raw
    response = example_client.post(url, data=raw, content_type="application/json")
    _assert_clean_json_error(response, 400, tmp_path)
    assert example_client.get("/api/shop/users").get_json()["users"] == [user.get_json()]
    assert example_client.get("/api/shop/purchases").get_json()["purchases"] == []
