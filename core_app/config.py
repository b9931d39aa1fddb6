"""Layered configuration: defaults, settings file, ``CORE_APP_*`` environment, test config.

Later layers win. Plugin defaults are added last with ``setdefault``, so every layer
above overrides them. Values that name plugins accept a list or a comma-separated
string, because that is what an environment variable can hold.
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from .errors import ConfigError

ENV_PREFIX = "CORE_APP"
PRODUCTION = "production"
MIN_SECRET_KEY_LENGTH = 32
_DEV_SECRET_KEY = "dev-only-not-secret"

DEFAULTS: dict[str, Any] = {
    # "development" or "production"; production is strict about secrets and plugin errors.
    "ENV": "development",
    "SECRET_KEY": None,
    # Allowlist of plugin names (None: every installed plugin) and denylist.
    "PLUGINS": None,
    "DISABLED_PLUGINS": [],
    # "raise": a broken plugin stops start-up; "skip": it is reported and left out.
    # None picks "raise" in production and "skip" otherwise.
    "PLUGIN_ERRORS": None,
    # Per plugin name: URL prefix and Celery queue, overriding what the plugin declares.
    "PLUGIN_URL_PREFIXES": {},
    "PLUGIN_QUEUES": {},
    # Keep the entry-point scan in the instance folder until a sys.path folder changes.
    "DISCOVERY_CACHE": True,
    # Seconds a plugin may take to import; a slower one fails like a broken one.
    "PLUGIN_IMPORT_BUDGET": 5.0,
    # Serve GET /plugins (the plugin report); None: on except in production.
    "EXPOSE_PLUGINS": None,
    # Log every hook call with its plugin, arguments and duration.
    "TRACE_HOOKS": False,
    # Celery: None for both means the embedded broker in the instance folder.
    "BROKER_URL": None,
    "RESULT_BACKEND": None,
    # Any other Celery setting, by its lower-case Celery name.
    "CELERY": {},
    # Seconds a Redis message may stay unacknowledged before it is delivered again.
    "VISIBILITY_TIMEOUT": 3600,
    # Request limits: bodies over 16 MiB answer 413; form fields and parts are bounded.
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    "MAX_FORM_MEMORY_SIZE": 512 * 1024,
    "MAX_FORM_PARTS": 1000,
}

_NAME_LISTS = ("PLUGINS", "DISABLED_PLUGINS")


def instance_path(test_config: Mapping[str, Any] | None, default: Path) -> Path:
    """The instance folder: test config, then ``CORE_APP_INSTANCE_PATH``, then default."""
    chosen = (test_config or {}).get("INSTANCE_PATH") or os.environ.get(
        f"{ENV_PREFIX}_INSTANCE_PATH"
    )
    return Path(chosen).resolve() if chosen else default


def load_config(app: Flask, test_config: Mapping[str, Any] | None = None) -> None:
    """Fill ``app.config`` from every layer and check the result."""
    app.config.from_mapping(copy.deepcopy(DEFAULTS))  # nested env keys mutate dicts
    settings = os.environ.get(f"{ENV_PREFIX}_SETTINGS")
    if settings:
        _load_settings_file(app, Path(settings))
    app.config.from_prefixed_env(ENV_PREFIX)
    if test_config:
        app.config.from_mapping(test_config)
    for key in _NAME_LISTS:
        app.config[key] = name_list(app.config[key])
    _check(app)


def _load_settings_file(app: Flask, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"CORE_APP_SETTINGS names {path}, which is not a file.")
    if path.suffix == ".toml":
        app.config.from_file(str(path.resolve()), load=tomllib.load, text=False)
    elif path.suffix == ".json":
        app.config.from_file(str(path.resolve()), load=json.load)
    else:
        app.config.from_pyfile(str(path.resolve()))


def name_list(value: object) -> list[str] | None:
    """Normalise a list of plugin names given as a list or a comma-separated string."""
    if value is None:
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [str(part) for part in value]
    raise ConfigError(f"Expected a list of plugin names, got {value!r}.")


def is_production(app: Flask) -> bool:
    return bool(app.config["ENV"] == PRODUCTION)


def _check(app: Flask) -> None:
    config = app.config
    if config["ENV"] not in ("development", PRODUCTION):
        raise ConfigError(
            f"ENV must be 'development' or 'production', not {config['ENV']!r}. "
            "Set CORE_APP_ENV accordingly."
        )
    if config["PLUGIN_ERRORS"] is None:
        config["PLUGIN_ERRORS"] = "raise" if is_production(app) else "skip"
    if config["PLUGIN_ERRORS"] not in ("raise", "skip"):
        raise ConfigError(
            f"PLUGIN_ERRORS must be 'raise' or 'skip', not {config['PLUGIN_ERRORS']!r}. "
            "Set CORE_APP_PLUGIN_ERRORS=raise or CORE_APP_PLUGIN_ERRORS=skip."
        )
    if config["EXPOSE_PLUGINS"] is None:
        config["EXPOSE_PLUGINS"] = not is_production(app)
    for key in ("PLUGIN_URL_PREFIXES", "PLUGIN_QUEUES", "CELERY"):
        if not isinstance(config[key], Mapping):
            raise ConfigError(f"{key} must be a mapping, not {config[key]!r}.")
    if is_production(app):
        _check_production(app)
    elif not config["SECRET_KEY"]:
        config["SECRET_KEY"] = _DEV_SECRET_KEY


def _check_production(app: Flask) -> None:
    key = app.config["SECRET_KEY"]
    if not key or key == _DEV_SECRET_KEY or len(str(key)) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            "Production needs a real SECRET_KEY of at least "
            f"{MIN_SECRET_KEY_LENGTH} characters. Generate one with "
            "`python -c 'import secrets; print(secrets.token_hex())'` and set "
            "CORE_APP_SECRET_KEY."
        )
    if app.config.get("DEBUG") or app.debug:
        raise ConfigError(
            "Production never runs the debugger: unset DEBUG / FLASK_DEBUG / --debug."
        )


def plugin_namespace(plugin: str) -> str:
    """The prefix of a plugin's configuration keys: ``shop`` -> ``SHOP_``."""
    return f"{plugin.upper()}_"
