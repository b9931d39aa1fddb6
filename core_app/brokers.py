"""Which broker a URL names: the settings, checks and tests that differ by broker ask here."""

from __future__ import annotations

#: Served by core_app.redis_transport (kombu's, fixed to survive a restart).
REDIS_SCHEMES = ("redis://", "rediss://")
#: RabbitMQ through py-amqp (kombu's ``pyamqp`` transport).
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def is_redis(url: object) -> bool:
    return isinstance(url, str) and url.startswith(REDIS_SCHEMES)


def is_amqp(url: object) -> bool:
    return isinstance(url, str) and url.startswith(AMQP_SCHEMES)
