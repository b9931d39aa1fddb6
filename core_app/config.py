"""Layered configuration: defaults, settings file, ``CORE_APP_*`` environment, test config.

Later layers win. Plugin defaults are added last with ``setdefault``, so every layer
above overrides them. Values that name plugins accept a list or a comma-separated
string, because that is what an environment variable can hold.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from .brokers import is_amqp
from .errors import ConfigError

ENV_PREFIX = "CORE_APP"
PRODUCTION = "production"
MIN_SECRET_KEY_LENGTH = 32
#: Estimated bits of entropy a production SECRET_KEY needs (see secret_key_bits).
MIN_SECRET_KEY_BITS = 128
_DEV_SECRET_KEY = "dev-only-not-secret"
#: Settings read verbatim from the environment, never parsed as JSON: SECRET_KEY and
#: any key named ``*_SECRET_KEY``, ``*_SECRET``, ``*_PASSWORD`` or ``*_TOKEN``.
_SECRET_NAMES = ("SECRET_KEY", "SECRET", "PASSWORD", "TOKEN")

DEFAULTS: dict[str, Any] = {
    # "development" or "production"; production is strict about secrets and plugin errors.
    "ENV": "development",
    # Required in production: a str of at least 32 characters and 128 estimated bits
    # (secret_key_bits); from the environment it is taken verbatim, never as JSON.
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
    # The OpenAPI document and the API docs page (host routes: no plugin may cover them),
    # served when EXPOSE_API_DOCS is on; None: on except in production (core_app.openapi).
    "OPENAPI_URL": "/openapi.json",
    "API_DOCS_URL": "/docs",
    "EXPOSE_API_DOCS": None,
    # Log every hook call with its plugin, arguments and duration.
    "TRACE_HOOKS": False,
    # Celery: None for both means the embedded broker in the instance folder.
    "BROKER_URL": None,
    "RESULT_BACKEND": None,
    # Production refuses to start without BROKER_URL unless this is True: the embedded
    # broker is files in one machine's instance folder, which no other host sees.
    "ALLOW_EMBEDDED_BROKER": False,
    # Versions, error texts and check details in /health and /ready; None: on except
    # in production, where anonymous callers get a status and plugin names only.
    "EXPOSE_HEALTH_DETAILS": None,
    # Any other Celery setting, by its lower-case Celery name.
    "CELERY": {},
    # Seconds a Redis message may stay unacknowledged before it is delivered again; None
    # derives it from the three below and the prefetch (core_app.celery_app).
    "VISIBILITY_TIMEOUT": None,
    # Hard time limit of every task that declares none (Celery's task_time_limit).
    "TASK_TIME_LIMIT": 300,
    # The longest countdown or ETA a task is sent with (retries included).
    "MAX_COUNTDOWN": 180,
    # A task delivered more often than this is parked in deadletter:<plugin> (Redis).
    "MAX_DELIVERIES": 5,
    # The database every plugin shares (SQLAlchemy URL); None: SQLite in the instance
    # folder, refused in production unless DATABASE_ALLOW_SQLITE (core_app.db).
    "DATABASE_URL": None,
    "DATABASE_ALLOW_SQLITE": False,
    # Upgrade every plugin's tables when the app is built; None: on in development,
    # off in production, where True is refused (run `python run.py db upgrade`).
    "DATABASE_AUTO_UPGRADE": None,
    # Extra create_engine() arguments, e.g. {"pool_size": 10}.
    "DATABASE_ENGINE_OPTIONS": {},
    # Seconds between a worker's passes over the outbox rows of its queues (0: none),
    # and the age a row must reach first (younger ones are their writer's to publish).
    "OUTBOX_RELAY_INTERVAL": 1.0,
    "OUTBOX_RELAY_GRACE": 5.0,
    # Request limits: bodies over 16 MiB answer 413; form fields and parts are bounded.
    "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    "MAX_FORM_MEMORY_SIZE": 512 * 1024,
    "MAX_FORM_PARTS": 1000,
    # JSON request bodies nested deeper than this answer 400 (core_app.wrappers).
    "MAX_JSON_DEPTH": 100,
}

_NAME_LISTS = ("PLUGINS", "DISABLED_PLUGINS")


def instance_path(test_config: Mapping[str, Any] | None = None) -> Path:
    """The instance folder: ``INSTANCE_PATH`` from the test config, else
    ``CORE_APP_INSTANCE_PATH``, else ``instance/`` in the working directory. Never guessed
    from where the caller's file is: every process of a deployment finds the same one."""
    chosen = (test_config or {}).get("INSTANCE_PATH") or os.environ.get(
        f"{ENV_PREFIX}_INSTANCE_PATH"
    )
    return Path(chosen or "instance").resolve()


def load_config(app: Flask, test_config: Mapping[str, Any] | None = None) -> None:
    """Fill ``app.config`` from every layer and check the result."""
    app.config.from_mapping(copy.deepcopy(DEFAULTS))  # nested env keys mutate dicts
    settings = os.environ.get(f"{ENV_PREFIX}_SETTINGS")
    if settings:
        _load_settings_file(app, Path(settings))
    app.config.from_prefixed_env(ENV_PREFIX)
    _keep_secrets_verbatim(app)
    if test_config:
        app.config.from_mapping(test_config)
    for key in _NAME_LISTS:
        app.config[key] = name_list(app.config[key])
    _check(app)


def _load_settings_file(app: Flask, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"CORE_APP_SETTINGS names {path}, which is not a file.")
    if path.suffix == ".toml":
        import tomllib  # only settings files need it; a worker's start-up does not

        app.config.from_file(str(path.resolve()), load=tomllib.load, text=False)
    elif path.suffix == ".json":
        app.config.from_file(str(path.resolve()), load=json.load)
    else:
        app.config.from_pyfile(str(path.resolve()))


def _keep_secrets_verbatim(app: Flask) -> None:
    """Undo ``from_prefixed_env``'s JSON parsing for secrets: a secret is exactly the text
    of its variable, so a key of 64 digits stays that string instead of becoming an int
    (``true`` a bool, ``"abc"`` the three letters)."""
    prefix = f"{ENV_PREFIX}_"
    for name, raw in os.environ.items():
        if not name.startswith(prefix):
            continue
        key = name[len(prefix) :]
        if "__" not in key and _is_secret_name(key):
            app.config[key] = raw


def _is_secret_name(key: str) -> bool:
    return any(key == name or key.endswith(f"_{name}") for name in _SECRET_NAMES)


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
    for key in ("EXPOSE_PLUGINS", "EXPOSE_HEALTH_DETAILS", "EXPOSE_API_DOCS"):
        if config[key] is None:
            config[key] = not is_production(app)
    for key in ("OPENAPI_URL", "API_DOCS_URL"):
        _check_host_path(key, config[key])
    for key in ("PLUGIN_URL_PREFIXES", "PLUGIN_QUEUES", "CELERY"):
        if not isinstance(config[key], Mapping):
            raise ConfigError(f"{key} must be a mapping, not {config[key]!r}.")
    for key in (
        "ALLOW_EMBEDDED_BROKER",
        "EXPOSE_HEALTH_DETAILS",
        "EXPOSE_API_DOCS",
        "DATABASE_ALLOW_SQLITE",
    ):
        if not isinstance(config[key], bool):
            raise ConfigError(
                f"{key} must be true or false, not {config[key]!r}. "
                f"Set CORE_APP_{key}=true or CORE_APP_{key}=false."
            )
    depth = config["MAX_JSON_DEPTH"]
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"MAX_JSON_DEPTH must be a positive integer, not {depth!r}.")
    if is_production(app):
        _check_production(app)
    elif not config["SECRET_KEY"]:
        config["SECRET_KEY"] = _DEV_SECRET_KEY


def _check_host_path(key: str, path: object) -> None:
    """A path the host serves itself: absolute, fixed, not the root."""
    if not isinstance(path, str) or not path.startswith("/") or path.strip("/") == "":
        raise ConfigError(f"{key} must be a path such as '/openapi.json', not {path!r}.")
    if "<" in path or ">" in path or "?" in path or "#" in path:
        raise ConfigError(f"{key} must be a fixed path (no variables or query), not {path!r}.")


def _check_production(app: Flask) -> None:
    _check_secret_key(app.config["SECRET_KEY"])
    if app.config.get("DEBUG") or app.debug:
        raise ConfigError(
            "Production never runs the debugger: unset DEBUG / FLASK_DEBUG / --debug."
        )
    _check_broker(app)


_GENERATE = (
    "Generate one with `python -c 'import secrets; print(secrets.token_hex())'` and set "
    "CORE_APP_SECRET_KEY."
)


def _check_secret_key(key: object) -> None:
    """Refuse a production SECRET_KEY that is missing, not text, short or guessable."""
    if not key or key == _DEV_SECRET_KEY:
        raise ConfigError(
            f"Production needs a real SECRET_KEY of at least {MIN_SECRET_KEY_LENGTH} "
            f"characters. {_GENERATE}"
        )
    if not isinstance(key, (str, bytes)):
        raise ConfigError(
            f"SECRET_KEY must be a string, not {type(key).__name__}: in a settings file, "
            f"quote it. {_GENERATE}"
        )
    if isinstance(key, str) and not key.strip():
        raise ConfigError(f"SECRET_KEY is only whitespace. {_GENERATE}")
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"Production needs a real SECRET_KEY of at least {MIN_SECRET_KEY_LENGTH} "
            f"characters; this one has {len(key)}. {_GENERATE}"
        )
    bits = secret_key_bits(key)
    if bits < MIN_SECRET_KEY_BITS:
        raise ConfigError(
            f"SECRET_KEY is guessable: about {bits:.0f} bits of entropy (its length times "
            "log2 of its number of distinct characters, counting a repeated part once); "
            f"production needs at least {MIN_SECRET_KEY_BITS}. A random key of 64 hex "
            f"characters has 256. {_GENERATE}"
        )


def secret_key_bits(key: str | bytes) -> float:
    """A cautious estimate of a key's entropy in bits.

    ``len(unit) * log2(distinct characters of unit)``, where ``unit`` is the key's
    shortest repeating part (``"abcabcab"`` -> ``"abc"``). It cannot tell a random key
    from a well-chosen pattern, but it catches the usual mistakes: whitespace, one
    repeated character, a phrase repeated to length, a short run of digits.
    ``secrets.token_hex()`` (64 hex characters) scores 230 to 256 and
    ``secrets.token_urlsafe()`` about 200; 32 random digits score at most 106 and are
    refused; a 32-character hex key (``token_hex(16)``) rarely shows all 16 digits and is
    usually refused too, so generate keys with the default size.
    """
    unit = key[: _shortest_period(key)]
    distinct = len(set(unit))
    return len(unit) * math.log2(distinct) if distinct > 1 else 0.0


def _shortest_period(text: str | bytes) -> int:
    """The smallest ``p`` with ``text[i] == text[i + p]`` for every ``i`` (KMP, O(n))."""
    if not text:
        return 0
    border = [0] * len(text)
    length = 0
    for index in range(1, len(text)):
        while length and text[index] != text[length]:
            length = border[length - 1]
        if text[index] == text[length]:
            length += 1
        border[index] = length
    return len(text) - border[-1]


def _check_broker(app: Flask) -> None:
    """Refuse the embedded file broker in production unless it was chosen on purpose,
    and RabbitMQ without a result backend (it keeps none that other processes read)."""
    config = app.config
    broker = config["CELERY"].get("broker_url") or config["BROKER_URL"]
    if is_amqp(broker) and not (config["RESULT_BACKEND"] or config["CELERY"].get("result_backend")):
        raise ConfigError(
            "RabbitMQ keeps no task results that another process can read, so production "
            "needs RESULT_BACKEND beside an amqp:// BROKER_URL: "
            "CORE_APP_RESULT_BACKEND=redis://host:6379/1 or "
            "CORE_APP_RESULT_BACKEND=db+postgresql://user@host/db (see docs/operations.md)."
        )
    if broker:
        return
    if config["ALLOW_EMBEDDED_BROKER"]:
        return
    raise ConfigError(
        "Production needs a broker: no BROKER_URL is set, so tasks would go to the "
        "embedded file broker in this machine's instance folder, which workers on other "
        "hosts never see. Point every web, worker and beat process at Redis or RabbitMQ: "
        "CORE_APP_BROKER_URL=redis://host:6379/0 (or amqp://user:pass@host:5672/vhost). "
        "To run a one-machine deployment on the embedded broker on purpose, set "
        "CORE_APP_ALLOW_EMBEDDED_BROKER=true."
    )


def plugin_namespace(plugin: str) -> str:
    """The prefix of a plugin's configuration keys: ``shop`` -> ``SHOP_``."""
    return f"{plugin.upper()}_"
