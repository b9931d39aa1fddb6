"""Configuration layers: defaults < settings file < CORE_APP_* < test config."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest
from fakes import blueprint_source, config

from core_app import ConfigError, PluginConflictError, PluginDeclarationError, create_app
from core_app.config import (
    DEFAULTS,
    MIN_SECRET_KEY_BITS,
    MIN_SECRET_KEY_LENGTH,
    secret_key_bits,
)


def _settings_file(tmp_path: Path, kind: str, values: dict[str, object]) -> Path:
    path = tmp_path / f"settings.{kind}"
    if kind == "py":
        path.write_text("".join(f"{key} = {value!r}\n" for key, value in values.items()))
    elif kind == "toml":
        lines = [f"{key} = {json.dumps(value)}\n" for key, value in values.items()]
        path.write_text("".join(lines))
    else:
        path.write_text(json.dumps(values))
    return path


@pytest.mark.parametrize("kind", ["py", "toml", "json"])
def test_layers_in_order(tmp_path, monkeypatch, kind):
    settings = {
        "MAX_CONTENT_LENGTH": 4321,  # a default the file overrides
        "LAYER_FILE": "file",
        "LAYER_ENV": "file",
        "LAYER_TEST": "file",
    }
    monkeypatch.setenv("CORE_APP_SETTINGS", str(_settings_file(tmp_path, kind, settings)))
    monkeypatch.setenv("CORE_APP_LAYER_ENV", "env")
    monkeypatch.setenv("CORE_APP_LAYER_TEST", "env")
    monkeypatch.setenv("CORE_APP_LAYER_ENV_ONLY", "env")

    app = create_app(config(tmp_path, [], LAYER_TEST="test"))

    assert app.config["MAX_CONTENT_LENGTH"] == 4321 != DEFAULTS["MAX_CONTENT_LENGTH"]
    assert app.config["LAYER_FILE"] == "file"
    assert app.config["LAYER_ENV"] == "env"
    assert app.config["LAYER_TEST"] == "test"
    assert app.config["LAYER_ENV_ONLY"] == "env"
    assert app.config["VISIBILITY_TIMEOUT"] == DEFAULTS["VISIBILITY_TIMEOUT"]


def test_environment_values_are_parsed_as_json(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE_APP_MAX_CONTENT_LENGTH", "2048")
    monkeypatch.setenv("CORE_APP_TRACE_HOOKS", "true")
    monkeypatch.setenv("CORE_APP_PLUGIN_QUEUES", '{"shop": "shop-fast"}')
    app = create_app(config(tmp_path, []))
    assert app.config["MAX_CONTENT_LENGTH"] == 2048
    assert app.config["TRACE_HOOKS"] is True
    assert app.config["PLUGIN_QUEUES"] == {"shop": "shop-fast"}


def test_settings_file_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    missing = tmp_path / "nope.py"
    monkeypatch.setenv("CORE_APP_SETTINGS", str(missing))
    with pytest.raises(ConfigError, match="not a file"):
        create_app(config(tmp_path, []))


def test_core_app_config_defaults_fill_the_plugin_namespace(tmp_path, monkeypatch):
    import core_app_shop

    defaults = core_app_shop.core_app_config_defaults()
    app = create_app(config(tmp_path, ["shop"], PLUGIN_ERRORS="raise"))
    assert app.config["SHOP_RECEIPTS_THROUGH_OUTBOX"] is defaults["RECEIPTS_THROUGH_OUTBOX"]
    record = app.extensions["core_app"].records["shop"]
    assert record.config_keys == sorted(f"SHOP_{key}" for key in defaults)
    assert "RECEIPTS_THROUGH_OUTBOX" not in app.config


def test_core_app_config_defaults_overridden_by_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE_APP_SHOP_RECEIPTS_THROUGH_OUTBOX", "false")
    app = create_app(config(tmp_path, ["shop"], PLUGIN_ERRORS="raise"))
    assert app.config["SHOP_RECEIPTS_THROUGH_OUTBOX"] is False
    assert app.test_client().get("/api/shop/users").status_code == 200


def test_core_app_config_defaults_overridden_by_settings_file_and_test_config(
    tmp_path, monkeypatch
):
    settings = _settings_file(tmp_path, "py", {"SHOP_RECEIPTS_THROUGH_OUTBOX": False})
    monkeypatch.setenv("CORE_APP_SETTINGS", str(settings))
    from_file = create_app(config(tmp_path / "a", ["shop"]))
    assert from_file.config["SHOP_RECEIPTS_THROUGH_OUTBOX"] is False
    from_test = create_app(config(tmp_path / "b", ["shop"], SHOP_RECEIPTS_THROUGH_OUTBOX=0))
    assert from_test.config["SHOP_RECEIPTS_THROUGH_OUTBOX"] == 0


def test_core_app_config_defaults_of_a_fake_plugin(fake_dist, tmp_path, monkeypatch):
    body = """
    from flask import current_app


    @hookimpl
    def core_app_config_defaults():
        return {"GREETING": "hello", "LIMIT": 3}


    @blueprint.get("/greeting")
    def greeting():
        return {"greeting": current_app.config["GREETER_GREETING"],
                "limit": current_app.config["GREETER_LIMIT"]}
    """
    fake_dist("greeter", blueprint_source("greeter", body=body))
    monkeypatch.setenv("CORE_APP_GREETER_LIMIT", "10")
    app = create_app(config(tmp_path, ["greeter"], PLUGIN_ERRORS="raise"))
    body = app.test_client().get("/api/greeter/greeting").get_json()
    assert body == {"greeting": "hello", "limit": 10}


@pytest.mark.parametrize(
    "returned",
    ['["NOT", "A", "DICT"]', '{"lower_case": 1}', '{"HAS-DASH": 1}'],
)
def test_core_app_config_defaults_invalid_return_is_refused(fake_dist, tmp_path, returned):
    body = f"""
    @hookimpl
    def core_app_config_defaults():
        return {returned}
    """
    fake_dist("badconf", blueprint_source("badconf", body=body))
    with pytest.raises(PluginDeclarationError, match="core_app_config_defaults"):
        create_app(config(tmp_path, ["badconf"], PLUGIN_ERRORS="raise"))


def test_instance_path_from_the_environment(tmp_path, monkeypatch):
    wanted = tmp_path / "from-env" / "instance"
    monkeypatch.setenv("CORE_APP_INSTANCE_PATH", str(wanted))
    app = create_app({"PLUGINS": ["shop"]})
    assert Path(app.instance_path) == wanted.resolve()
    assert wanted.is_dir()
    app.test_client().get("/api/shop/users")
    assert (wanted / "core_app.sqlite3").exists()  # the database every plugin shares


def test_instance_path_test_config_beats_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE_APP_INSTANCE_PATH", str(tmp_path / "env"))
    app = create_app(config(tmp_path, []))
    assert Path(app.instance_path) == (tmp_path / "instance").resolve()


@pytest.mark.parametrize("key", [None, "", "short", "x" * (MIN_SECRET_KEY_LENGTH - 1)])
def test_production_refuses_a_missing_or_short_secret_key(tmp_path, key):
    test_config = config(tmp_path, [], ENV="production")
    if key is not None:
        test_config["SECRET_KEY"] = key
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(test_config)


def test_production_refuses_the_development_key(tmp_path):
    development = create_app(config(tmp_path / "dev", []))
    dev_key = development.config["SECRET_KEY"]
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(config(tmp_path, [], ENV="production", SECRET_KEY=dev_key))


def test_production_refuses_the_secret_key_missing_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE_APP_ENV", "production")
    monkeypatch.delenv("CORE_APP_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="CORE_APP_SECRET_KEY"):
        create_app(config(tmp_path, []))


def test_production_refuses_debug(tmp_path):
    with pytest.raises(ConfigError, match="debug"):
        create_app(
            config(tmp_path, [], ENV="production", SECRET_KEY=secrets.token_hex(), DEBUG=True)
        )


def test_production_with_a_real_secret_key_starts_strict(tmp_path, monkeypatch):
    key = secrets.token_hex()
    monkeypatch.setenv("CORE_APP_ENV", "production")
    monkeypatch.setenv("CORE_APP_SECRET_KEY", key)
    monkeypatch.setenv("CORE_APP_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("CORE_APP_DATABASE_ALLOW_SQLITE", "true")  # the shop keeps tables
    app = create_app(config(tmp_path, ["shop"]))
    assert app.config["SECRET_KEY"] == key
    assert app.config["PLUGIN_ERRORS"] == "raise"
    assert app.config["EXPOSE_PLUGINS"] is False
    assert app.test_client().get("/plugins").status_code == 404
    assert app.test_client().get("/api/shop/home").status_code == 200


def test_development_defaults_to_lenient_plugin_errors(tmp_path):
    app = create_app(config(tmp_path, []))
    assert app.config["ENV"] == "development"
    assert app.config["PLUGIN_ERRORS"] == "skip"
    assert app.config["SECRET_KEY"]
    assert app.test_client().get("/plugins").status_code == 200


@pytest.mark.parametrize("env", ["production", "development"])
def test_default_plugin_error_policy_follows_env(fake_dist, tmp_path, env):
    fake_dist("alpha", blueprint_source("alpha", "/api/same"))
    fake_dist("beta", blueprint_source("beta", "/api/same"))
    test_config = config(
        tmp_path,
        ["alpha", "beta"],
        ENV=env,
        SECRET_KEY=secrets.token_hex(),
        BROKER_URL="redis://127.0.0.1:6379/0",
    )
    if env == "production":
        with pytest.raises(PluginConflictError):
            create_app(test_config)
    else:
        app = create_app(test_config)
        statuses = {r.name: r.status for r in app.extensions["core_app"].plugins()}
        # Lenient: neither had the prefix at a previous start, so neither is mounted.
        assert statuses["alpha"] == statuses["beta"] == "failed"


@pytest.mark.parametrize("value", ["ignore", "RAISE", "", 1])
def test_invalid_plugin_errors_value_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="PLUGIN_ERRORS"):
        create_app(config(tmp_path, [], PLUGIN_ERRORS=value))


def test_invalid_plugin_errors_from_the_environment_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE_APP_PLUGIN_ERRORS", "sometimes")
    with pytest.raises(ConfigError, match="CORE_APP_PLUGIN_ERRORS"):
        create_app(config(tmp_path, []))


def test_invalid_env_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ENV"):
        create_app(config(tmp_path, [], ENV="staging"))


@pytest.mark.parametrize("key", ["PLUGIN_URL_PREFIXES", "PLUGIN_QUEUES", "CELERY"])
def test_mapping_settings_must_be_mappings(tmp_path, key):
    with pytest.raises(ConfigError, match=key):
        create_app(config(tmp_path, [], **{key: "not a mapping"}))


def test_plugin_name_lists_accept_comma_separated_strings(fake_dist, tmp_path):
    fake_dist("one", blueprint_source("one"))
    fake_dist("two", blueprint_source("two"))
    app = create_app(config(tmp_path, None, PLUGINS=" one , two,, ", DISABLED_PLUGINS="two"))
    assert app.config["PLUGINS"] == ["one", "two"]
    assert app.config["DISABLED_PLUGINS"] == ["two"]
    assert [r.name for r in app.extensions["core_app"].active(builtins=False)] == ["one"]


def test_plugin_name_list_of_wrong_type_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="plugin names"):
        create_app(config(tmp_path, None, PLUGINS=42))


# -- production: a SECRET_KEY with real entropy, kept a string ---------------------------

REDIS = "redis://127.0.0.1:6379/0"  # never contacted by these tests
_rng = secrets.SystemRandom()


def _digits(count: int) -> str:
    return "".join(_rng.choice("0123456789") for _ in range(count))


GUESSABLE_KEYS = {
    "32 spaces": " " * 32,
    "tabs and newlines": "\t\n " * 20,
    "one character": "x" * 64,
    "32 digits in order": "12345678901234567890123456789012",
    "32 random digits": _digits(32),
    "a phrase repeated": "changeme" * 8,
    "a short pattern": "abc" * 30,
    "a hex run repeated": "0123456789abcdef" * 4,
}


@pytest.mark.parametrize("key", list(GUESSABLE_KEYS.values()), ids=list(GUESSABLE_KEYS))
def test_production_refuses_a_guessable_secret_key(tmp_path, key):
    with pytest.raises(ConfigError, match="SECRET_KEY") as info:
        create_app(config(tmp_path, [], ENV="production", SECRET_KEY=key, BROKER_URL=REDIS))
    assert "secrets.token_hex()" in str(info.value)


@pytest.mark.parametrize("key", list(GUESSABLE_KEYS.values()), ids=list(GUESSABLE_KEYS))
def test_production_refuses_a_guessable_secret_key_from_the_environment(tmp_path, monkeypatch, key):
    monkeypatch.setenv("CORE_APP_ENV", "production")
    monkeypatch.setenv("CORE_APP_SECRET_KEY", key)
    monkeypatch.setenv("CORE_APP_BROKER_URL", REDIS)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(config(tmp_path, []))


def test_generated_keys_pass_the_entropy_rule(tmp_path):
    for _ in range(300):
        assert secret_key_bits(secrets.token_hex()) >= MIN_SECRET_KEY_BITS
        assert secret_key_bits(secrets.token_urlsafe()) >= MIN_SECRET_KEY_BITS
        assert secret_key_bits(os.urandom(32)) >= MIN_SECRET_KEY_BITS
    assert secret_key_bits(_digits(32)) < MIN_SECRET_KEY_BITS  # at most 32 * log2(10) = 106
    assert secret_key_bits("changeme" * 8) == secret_key_bits("changeme")
    for key in (secrets.token_hex(), secrets.token_urlsafe(), os.urandom(32)):
        app = create_app(
            config(tmp_path / "a", [], ENV="production", SECRET_KEY=key, BROKER_URL=REDIS)
        )
        assert app.config["SECRET_KEY"] == key


@pytest.mark.parametrize("env", ["production", "development"])
def test_secrets_from_the_environment_stay_strings(tmp_path, monkeypatch, env):
    """from_prefixed_env parses values as JSON: 64 digits would become an int, ``true`` a
    bool, ``"quoted"`` lose its quotes. Secrets are taken verbatim."""
    key = "9" + _digits(63)  # 64 random digits: about 210 bits, a fine key, and valid JSON
    monkeypatch.setenv("CORE_APP_ENV", env)
    monkeypatch.setenv("CORE_APP_SECRET_KEY", key)
    monkeypatch.setenv("CORE_APP_BROKER_URL", REDIS)
    monkeypatch.setenv("CORE_APP_BILLING_API_TOKEN", "123456")
    monkeypatch.setenv("CORE_APP_SMTP_PASSWORD", "true")
    monkeypatch.setenv("CORE_APP_WEBHOOK_SECRET", '"quoted"')  # quotes are part of it
    monkeypatch.setenv("CORE_APP_RETRIES", "3")  # not a secret: still parsed
    app = create_app(config(tmp_path, []))
    assert app.config["SECRET_KEY"] == key
    assert app.config["BILLING_API_TOKEN"] == "123456"
    assert app.config["SMTP_PASSWORD"] == "true"
    assert app.config["WEBHOOK_SECRET"] == '"quoted"'
    assert app.config["RETRIES"] == 3


def test_a_secret_key_that_is_not_a_string_is_refused(tmp_path, monkeypatch):
    settings = _settings_file(tmp_path, "py", {"SECRET_KEY": 10**40, "BROKER_URL": REDIS})
    monkeypatch.setenv("CORE_APP_SETTINGS", str(settings))
    with pytest.raises(ConfigError, match="SECRET_KEY must be a string, not int"):
        create_app(config(tmp_path, [], ENV="production"))


# -- production: a real broker, or the embedded one on purpose -------------------------


@pytest.mark.parametrize(
    "fix",
    [
        {"ALLOW_EMBEDDED_BROKER": True},
        {"BROKER_URL": REDIS},
        {"CELERY": {"broker_url": REDIS}},
    ],
    ids=["embedded allowed on purpose", "BROKER_URL", "CELERY broker_url"],
)
def test_production_refuses_the_embedded_broker_unless_told(tmp_path, fix):
    test_config = config(tmp_path, ["shop"], ENV="production", SECRET_KEY=secrets.token_hex())
    with pytest.raises(ConfigError) as info:
        create_app(test_config)
    message = str(info.value)
    assert "BROKER_URL" in message and "embedded" in message
    assert "CORE_APP_BROKER_URL=redis://host:6379/0" in message
    assert "CORE_APP_ALLOW_EMBEDDED_BROKER=true" in message

    app = create_app({**test_config, **fix, "DATABASE_ALLOW_SQLITE": True})
    assert app.test_client().get("/api/shop/home").status_code == 200
    broker = app.extensions["celery"].conf.broker_url
    assert broker == ("filesystem://localhost/" if "ALLOW_EMBEDDED_BROKER" in fix else REDIS)


def test_allow_embedded_broker_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CORE_APP_ENV", "production")
    monkeypatch.setenv("CORE_APP_SECRET_KEY", secrets.token_hex())
    monkeypatch.setenv("CORE_APP_ALLOW_EMBEDDED_BROKER", "true")
    assert create_app(config(tmp_path / "yes", []))
    monkeypatch.setenv("CORE_APP_ALLOW_EMBEDDED_BROKER", "sure")
    with pytest.raises(ConfigError, match="ALLOW_EMBEDDED_BROKER must be true or false"):
        create_app(config(tmp_path / "typo", []))
    monkeypatch.setenv("CORE_APP_ALLOW_EMBEDDED_BROKER", "false")
    with pytest.raises(ConfigError, match="CORE_APP_BROKER_URL=redis://"):
        create_app(config(tmp_path / "no", []))
