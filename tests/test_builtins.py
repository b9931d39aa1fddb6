"""The host's own routes (core_app/builtins.py): ``/health`` (liveness), ``/ready``
(readiness: checks and plugins) and ``/plugins`` (the report), and what each tells an
anonymous caller of a production app. Their JSON shape in development is in
test_responses.py; a failing plugin health check is in test_hookspecs.py."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from fakes import config

from core_app import create_app
from core_app.discovery import host_version
from core_app.testing import free_port

SECRET = secrets.token_hex(32)


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production from the environment, on one machine (embedded broker, SQLite)."""
    monkeypatch.setenv("CORE_APP_ENV", "production")
    monkeypatch.setenv("CORE_APP_SECRET_KEY", SECRET)
    monkeypatch.setenv("CORE_APP_ALLOW_EMBEDDED_BROKER", "true")
    monkeypatch.setenv("CORE_APP_DATABASE_ALLOW_SQLITE", "true")


def test_plugins_report_is_off_in_production_unless_exposed(tmp_path, monkeypatch, production):
    hidden = create_app(config(tmp_path / "hidden", ["shop"])).test_client().get("/plugins")
    assert hidden.status_code == 404 and hidden.get_json()["status"] == 404

    monkeypatch.setenv("CORE_APP_EXPOSE_PLUGINS", "true")
    shown = create_app(config(tmp_path / "shown", ["shop"])).test_client().get("/plugins")
    assert shown.status_code == 200
    assert {row["name"]: row["status"] for row in shown.get_json()}["shop"] == "loaded"

    monkeypatch.delenv("CORE_APP_ENV")
    monkeypatch.delenv("CORE_APP_EXPOSE_PLUGINS")
    development = create_app(config(tmp_path / "dev", ["shop"])).test_client()
    assert development.get("/plugins").status_code == 200


def _health_app(tmp_path: Path, broker_port: int, **settings: object):
    """Production, lenient, shop loaded, plugin ``broken`` broken, the broker down."""
    return create_app(
        config(
            tmp_path,
            ["shop", "broken"],
            ENV="production",
            SECRET_KEY=SECRET,
            BROKER_URL=f"redis://127.0.0.1:{broker_port}/0",
            PLUGIN_ERRORS="skip",
            DATABASE_ALLOW_SQLITE=True,
            **settings,
        )
    )


def test_production_health_and_ready_details_only_for_operators_who_ask(fake_dist, tmp_path):
    fake_dist("broken", "raise RuntimeError('kaboom in /srv/secret/config.py')", version="6.6")
    port = free_port()  # nothing listens: the broker check fails with host:port in its error
    client = _health_app(tmp_path / "anonymous", port).test_client()

    health = client.get("/health")
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json() == {
        "status": "unavailable",
        "checks": {
            "broker": {"ok": False},
            "database": {"ok": True},
            "migrations": {"ok": False},  # never migrated implicitly in production
        },
        "plugins": {"loaded": ["shop"], "failed": [{"name": "broken"}]},
    }
    for leak in (str(port), "127.0.0.1", "redis", "kaboom", "/srv/", "6.6", host_version()):
        assert leak not in health.text + ready.text, leak

    # Operators who turn details on (behind authentication) get them all.
    client = _health_app(tmp_path / "operator", port, EXPOSE_HEALTH_DETAILS=True).test_client()
    assert client.get("/health").get_json() == {"status": "ok", "version": host_version()}
    body = client.get("/ready").get_json()
    assert str(port) in body["checks"]["broker"]["error"]
    (failed,) = body["plugins"]["failed"]
    assert failed["name"] == "broken" and "kaboom" in failed["error"] and "6.6" in failed["error"]


def test_production_health_details_from_the_environment(tmp_path, monkeypatch, production):
    hidden = create_app(config(tmp_path / "hidden", ["shop"])).test_client().get("/health")
    assert hidden.get_json() == {"status": "ok"}
    monkeypatch.setenv("CORE_APP_EXPOSE_HEALTH_DETAILS", "true")
    shown = create_app(config(tmp_path / "shown", ["shop"])).test_client().get("/health")
    assert shown.get_json() == {"status": "ok", "version": host_version()}
