"""Bodies no schema describes, sent to every example route: raw bytes, text and form
bodies, under wrong, odd or missing content types. Each gets an answer below 500 with a
JSON body and no traceback.

Schemathesis (test_fuzz.py) sends what the document describes, and its negative cases
(valid JSON that breaks a schema, odd path and query values); deep nesting and lone
surrogates have their regression tests in test_responses.py.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"null", b"[]", b'"text"', b"{", b"a=1&b=2", b"\xff\xfe{}"]),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "application/merge-patch+json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/octet-stream",
        "",
    ]
)


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


def test_every_example_route_is_sent_bodies(app: Flask) -> None:
    routes = _routes(app)
    assert ("/api/shop/purchases", "POST") in routes
    assert ("/api/notifications/emails/<task_id>", "GET") in routes


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_body_makes_a_server_error(app: Flask, data: st.DataObject) -> None:
    rule, method = data.draw(st.sampled_from(_routes(app)))
    path = re.sub(r"<[^>]+>", "1", rule)
    response = app.test_client().open(
        path,
        method=method,
        data=data.draw(bodies),
        content_type=data.draw(content_types) or None,
    )
    text = response.get_data(as_text=True)
    assert response.status_code < 500, (method, path, text)
    assert isinstance(response.get_json(silent=True), dict), text
    assert "Traceback" not in text
