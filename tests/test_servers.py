"""The test servers core_app ships to plugin authors (core_app.servers): private nodes a
test may restart without losing what was durable, isolated from each other."""

from __future__ import annotations

import kombu


def _put(url: str, queue: str, payload: dict[str, int]) -> None:
    with kombu.Connection(url) as connection:
        simple = connection.SimpleQueue(queue, serializer="json")
        simple.put(payload)
        simple.close()


def _get(url: str, queue: str) -> object:
    with kombu.Connection(url) as connection:
        simple = connection.SimpleQueue(queue)
        try:
            return simple.get(timeout=5).payload
        finally:
            simple.close()


def test_a_private_rabbitmq_node_keeps_durable_messages_across_a_restart(rabbitmq_server, amqp_url):
    assert f"127.0.0.1:{rabbitmq_server.port}" in amqp_url
    _put(amqp_url, "kept", {"n": 1})
    rabbitmq_server.restart()
    assert _get(amqp_url, "kept") == {"n": 1}


def test_each_test_gets_a_vhost_of_its_own(rabbitmq_server, amqp_url):
    other = rabbitmq_server.add_vhost("neighbour")
    _put(other, "same-name", {"n": 2})
    _put(amqp_url, "same-name", {"n": 3})
    assert _get(amqp_url, "same-name") == {"n": 3}
    assert _get(other, "same-name") == {"n": 2}


def test_a_redis_server_keeps_its_data_across_a_restart(redis_server, redis_url):
    client = redis_server.client()
    client.set("kept", "yes")
    redis_server.restart()
    assert redis_server.client().get("kept") == b"yes"
