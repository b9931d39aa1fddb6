"""Every error is JSON with the right status, and leaks no traceback or file path."""

from __future__ import annotations

import pytest
from fakes import blueprint_source, config

from core_app import create_app, discovery

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
