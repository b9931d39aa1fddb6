"""The docs page as served (core_app.docs_page): Swagger UI from the installed package,
nothing from another host, moved by its settings, off in production unless exposed.
The same page in a real browser: test_docs_page_browser.py."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from fakes import config
from flask.testing import FlaskClient

from core_app import create_app
from core_app.docs_page import ASSETS


def client(tmp_path: Path, **settings: object) -> FlaskClient:
    return create_app(config(tmp_path, ["shop"], TESTING=True, **settings)).test_client()


def referenced(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_the_page_loads_swagger_ui_from_the_app_and_names_no_other_host(tmp_path):
    docs = client(tmp_path)
    page = docs.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert not re.search(r"https?:|//[a-z]", html), html
    assert '"url": "/openapi.json"' in html
    assert '"validatorUrl": null' in html  # else the page asks validator.swagger.io
    assets = referenced(html)
    assert "/docs/swagger-ui-bundle.js" in assets
    for url in assets:
        served = docs.get(url)
        assert served.status_code == 200, url
        assert served.data == (ASSETS / url.removeprefix("/docs/")).read_bytes(), url


def test_settings_move_the_page_and_the_document_it_shows(tmp_path):
    docs = client(tmp_path, API_DOCS_URL="/api-docs", OPENAPI_URL="/meta/openapi.json")
    html = docs.get("/api-docs").get_data(as_text=True)
    assert '"url": "/meta/openapi.json"' in html
    assert "/api-docs/swagger-ui.css" in referenced(html)
    assert docs.get("/api-docs/swagger-ui.css").status_code == 200
    assert docs.get("/docs").status_code == 404


@pytest.mark.parametrize("path", ["/docs/../__init__.py", "/docs/%2e%2e/__init__.py", "/docs/x"])
def test_only_swagger_ui_files_are_served(tmp_path, path):
    missing = client(tmp_path).get(path)
    assert missing.status_code == 404
    assert missing.get_json()["status"] == 404


def test_the_page_is_off_in_production_unless_exposed(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE_APP_ENV", "production")
    monkeypatch.setenv("CORE_APP_SECRET_KEY", secrets.token_hex())
    monkeypatch.setenv("CORE_APP_ALLOW_EMBEDDED_BROKER", "true")
    monkeypatch.setenv("CORE_APP_DATABASE_ALLOW_SQLITE", "true")
    hidden = client(tmp_path / "hidden")
    for path in ("/docs", "/docs/swagger-ui-bundle.js"):
        answer = hidden.get(path)
        assert answer.status_code == 404, path
        assert answer.get_json()["error"] == "Not Found", path  # as /plugins answers

    monkeypatch.setenv("CORE_APP_EXPOSE_API_DOCS", "true")
    assert client(tmp_path / "shown").get("/docs").status_code == 200
