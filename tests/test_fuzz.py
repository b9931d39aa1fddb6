"""Fuzz every route of the example plugins: no input may produce a 5xx or a non-JSON body."""

from __future__ import annotations

import json
import re
import string

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FIELDS = ["name", "email", "user_id", "item", "quantity", "price_cents", "to", "subject", "body"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)).map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=200),
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json; charset=latin-1",
    ]
)
path_values = st.text(alphabet=string.printable.replace("/", ""), min_size=1, max_size=40)


@pytest.fixture
def core_app_plugins() -> list[str]:
    return ["shop", "notifications"]


def _routes(app: Flask) -> list[tuple[str, str]]:
    return sorted(
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
    )


def test_every_example_route_is_fuzzed(app: Flask) -> None:
    routes = _routes(app)
    assert ("/api/shop/purchases", "POST") in routes
    assert ("/api/notifications/emails/<task_id>", "GET") in routes


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_input_makes_a_server_error(app: Flask, data: st.DataObject) -> None:
    client = app.test_client()
    rule, method = data.draw(st.sampled_from(_routes(app)))
    path = re.sub(r"<[^>]+>", lambda _: data.draw(path_values), rule)
    response = client.open(
        path,
        method=method,
        data=data.draw(bodies),
        content_type=data.draw(content_types) or None,
    )
    assert response.status_code < 500, (method, path, response.get_data(as_text=True))
    body = response.get_json(silent=True)
    assert isinstance(body, dict), response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
