"""The notifications API is safe to expose: no header or body injection, one recipient,
and only recipients the operator allows.

Every payload is refused twice: by the API (400 naming the field) and by the task, which
other plugins call by name (``notifications.send_email``) past the API. The task runs
in-process here (``apply``), against a real SMTP server (aiosmtpd) on loopback, which must
receive nothing for a refused payload, and exactly our headers for an accepted one.
"""

from __future__ import annotations

import secrets
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest
from core_app_notifications.mail import HEADERS, check_headers
from core_app_notifications.tasks import send_email
from core_app_notifications.validation import InvalidEmail

from core_app import PluginDeclarationError

EMAIL = {"to": "ada@example.com", "subject": "Welcome", "body": "Hello, Ada."}
EVIL = "evil@attacker.example"

#: Subjects that became real header lines (Bcc:, a second Content-Type:) or could.
SUBJECT_INJECTIONS = {
    "CRLF": f"Hi\r\nBcc: {EVIL}",
    "LF": f"Hi\nBcc: {EVIL}",
    "CR": f"Hi\rBcc: {EVIL}",
    "encoded CRLF, q": f"=?utf-8?q?Hi=0D=0ABcc:_{EVIL}?=",
    "encoded CRLF, b": "=?utf-8?b?SGkNCkJjYzogZXZpbEBhdHRhY2tlci5leGFtcGxl?=",
    "encoded Bcc and Content-Type": (
        f"Hello =?utf-8?q?x=0D=0ABcc:_{EVIL}=0D=0AContent-Type:_text/html?= there"
    ),
    "encoded LF after a fold": "a" * 80 + f" =?utf-8?q?=0ABcc:_{EVIL}?=",
    "encoded word, no line break": "=?utf-8?q?Caf=C3=A9?=",
    "line separator U+2028": f"Hi\u2028Bcc: {EVIL}",
    "next line U+0085": f"Hi\x85Bcc: {EVIL}",
    "vertical tab": f"Hi\x0bBcc: {EVIL}",
    "form feed": f"Hi\x0cBcc: {EVIL}",
    "NUL": "Hi\x00",
    "tab": "Hi\tthere",
}

#: Recipients that are not exactly one plain mailbox.
TO_INJECTIONS = {
    "CRLF Bcc": f"ada@example.com\r\nBcc: {EVIL}",
    "LF Bcc": f"ada@example.com\nBcc: {EVIL}",
    "comma list": f"ada@example.com, {EVIL}",
    "comma list, no space": f"ada@example.com,{EVIL}",
    "semicolon list": f"ada@example.com;{EVIL}",
    "display name": "Ada <ada@example.com>",
    "group syntax": f"friends: ada@example.com, {EVIL};",
    "encoded word": "=?utf-8?q?ada=0D=0ABcc:_evil?=@example.com",
    "quoted local part": f'"{EVIL}"@example.com',
    "non-ASCII local part": "ädä@example.com",
    "zero-width space": "ada@exa\u200bmple.com",
    "IP literal": "ada@[127.0.0.1]",
    "no domain": "ada",
    "no dot in the domain": "ada@localhost",
    "too long": "a" * 250 + "@example.com",
}

BODY_INJECTIONS = {
    "NUL": "Hello\x00",
    "escape sequence": "\x1b[31mred",
    "bare CR": "line one\rline two",
}


def post(client, **fields):
    return client.post("/api/notifications/emails", json={**EMAIL, **fields})


@pytest.fixture
def core_app_plugins():
    return ["notifications"]


# -- at the API -------------------------------------------------------------------------


@pytest.mark.parametrize("subject", SUBJECT_INJECTIONS.values(), ids=SUBJECT_INJECTIONS)
def test_the_api_refuses_a_subject_that_could_become_a_header(core_app_client, subject):
    response = post(core_app_client, subject=subject)
    assert response.status_code == 400, response.json
    assert set(response.json["fields"]) == {"subject"}
    assert response.json["error"] == "Bad Request" and response.json["status"] == 400


@pytest.mark.parametrize("to", TO_INJECTIONS.values(), ids=TO_INJECTIONS)
def test_the_api_refuses_anything_but_one_mailbox(core_app_client, to):
    response = post(core_app_client, to=to)
    assert response.status_code == 400, response.json
    assert set(response.json["fields"]) == {"to"}


@pytest.mark.parametrize("body", BODY_INJECTIONS.values(), ids=BODY_INJECTIONS)
def test_the_api_refuses_control_characters_in_the_body(core_app_client, body):
    response = post(core_app_client, body=body)
    assert response.status_code == 400, response.json
    assert set(response.json["fields"]) == {"body"}


@pytest.mark.parametrize(
    ("to", "sent_to"),
    [
        ("ada@example.com", "ada@example.com"),
        ("Ada.Lovelace+news@Example.COM", "Ada.Lovelace+news@example.com"),
        # An internationalised domain is accepted and addressed in its ASCII form.
        ("ada@exämple.org", "ada@xn--exmple-cua.org"),
    ],
)
def test_one_mailbox_is_accepted_in_its_ascii_form(core_app_app, core_app_client, to, sent_to):
    response = post(core_app_client, to=to, body="Line one\r\nLine two\n\ttabbed")
    assert response.status_code == 202, response.json
    with core_app_app.app_context():  # what the worker would do with it
        result = send_email.apply(kwargs={**EMAIL, "to": to})
    assert result.successful(), result.result
    outbox = Path(core_app_app.instance_path) / core_app_app.config["NOTIFICATIONS_OUTBOX"]
    message = message_from_bytes((outbox / result.result["file"]).read_bytes())
    assert message["To"] == sent_to


# -- in the task, against a real SMTP server --------------------------------------------


PAYLOADS = [
    *({"subject": s} for s in SUBJECT_INJECTIONS.values()),
    *({"to": t} for t in TO_INJECTIONS.values()),
    *({"body": b} for b in BODY_INJECTIONS.values()),
]
PAYLOAD_IDS = [
    *(f"subject {k}" for k in SUBJECT_INJECTIONS),
    *(f"to {k}" for k in TO_INJECTIONS),
    *(f"body {k}" for k in BODY_INJECTIONS),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)
def test_the_task_refuses_every_payload_and_the_server_receives_nothing(
    make_app, smtp_sink, payload
):
    app = make_app(NOTIFICATIONS_SMTP_URL=smtp_sink.url)
    with app.app_context():
        result = send_email.apply(kwargs={**EMAIL, **payload})
    assert result.failed()
    assert isinstance(result.result, InvalidEmail), result.result
    assert set(result.result.errors) == set(payload)
    assert smtp_sink.received == []


def test_an_accepted_email_reaches_the_server_with_exactly_our_headers(make_app, smtp_sink):
    app = make_app(NOTIFICATIONS_SMTP_URL=smtp_sink.url)
    subject = "Grüße: your receipt (Bcc: is just text here) " + "long " * 30
    with app.app_context():
        result = send_email.apply(kwargs={**EMAIL, "subject": subject, "body": "Hi.\n.\nBye."})
    assert result.successful(), result.result
    [mail] = smtp_sink.received
    assert mail.recipients == ["ada@example.com"]
    data = mail.content
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    names = [line.split(":", 1)[0] for line in head.split("\r\n") if line[:1] not in " \t"]
    assert sorted(names) == sorted(HEADERS)
    message = message_from_bytes(data, policy=EmailMessage().policy)
    assert message["To"] == "ada@example.com"
    assert str(message["Subject"]) == subject
    assert message.get_content().replace("\r\n", "\n") == "Hi.\n.\nBye.\n"


def test_the_serialised_headers_are_checked_whatever_the_interpreter_does(core_app_app):
    """Python < 3.11.10 writes a decoded encoded word's CR/LF as raw header lines
    (CVE-2024-6923); later versions refuse to serialise it. Either way, nothing with a
    header we did not set gets out: check_headers refuses such bytes."""
    naive = EmailMessage()
    naive["From"], naive["To"] = "core-app@localhost", "ada@example.com"
    naive["Subject"] = SUBJECT_INJECTIONS["encoded Bcc and Content-Type"]
    naive.set_content("Hi.")
    try:
        data = naive.as_bytes(policy=naive.policy.clone(linesep="\r\n"))
    except Exception:  # a fixed interpreter: HeaderWriteError
        return
    with pytest.raises(InvalidEmail, match="unexpected headers"):
        check_headers(data)


# -- recipient policy -------------------------------------------------------------------


def production(**settings):
    return {
        "ENV": "production",
        "SECRET_KEY": secrets.token_hex(),
        "ALLOW_EMBEDDED_BROKER": True,
        **settings,
    }


def test_production_refuses_to_start_without_a_recipient_policy(make_app):
    with pytest.raises(PluginDeclarationError) as info:
        make_app(**production())
    message = str(info.value)
    assert info.value.plugin == "notifications"
    assert "NOTIFICATIONS_ALLOWED_RECIPIENTS" in message
    assert "NOTIFICATIONS_ALLOW_ANY_RECIPIENT" in message
    assert "core-app-notifications" in message  # the distribution, as every PluginError


@pytest.mark.parametrize(
    "settings",
    [
        {
            "NOTIFICATIONS_ALLOWED_RECIPIENTS": ["@example.org"],
            "NOTIFICATIONS_ALLOW_ANY_RECIPIENT": True,
        },
        {"NOTIFICATIONS_ALLOWED_RECIPIENTS": ["not an address"]},
        {"NOTIFICATIONS_ALLOW_ANY_RECIPIENT": "sure"},
    ],
    ids=["both", "invalid entry", "not a boolean"],
)
def test_contradictory_or_invalid_policies_are_refused_in_any_environment(make_app, settings):
    with pytest.raises(PluginDeclarationError, match="NOTIFICATIONS_ALLOW"):
        make_app(**settings)


def test_production_mails_only_the_allowed_domains_and_addresses(make_app):
    allowed = ["@example.org", "ops@example.com", "@exämple.net"]
    app = make_app(**production(NOTIFICATIONS_ALLOWED_RECIPIENTS=allowed))
    client = app.test_client()
    for to in ("ann@example.org", "ANN@Example.ORG", "ops@example.com", "x@xn--exmple-cua.net"):
        assert post(client, to=to).status_code == 202, to
    for to in ("ada@example.com", "ann@sub.example.org", "ann@example.org.evil.example"):
        response = post(client, to=to)
        assert response.status_code == 400, to
        assert "allowed recipient" in response.json["fields"]["to"]
    with app.app_context():  # past the API, the task applies the same policy
        result = send_email.apply(kwargs={**EMAIL, "to": "ada@example.com"})
    assert result.failed() and "allowed recipient" in str(result.result)


def test_the_allowlist_can_come_from_the_environment_as_a_comma_list(make_app, monkeypatch):
    monkeypatch.setenv("CORE_APP_NOTIFICATIONS_ALLOWED_RECIPIENTS", "@example.org, ops@example.com")
    client = make_app(**production()).test_client()
    assert post(client, to="ann@example.org").status_code == 202
    assert post(client, to="ops@example.com").status_code == 202
    assert post(client, to="ada@example.com").status_code == 400


def test_production_may_open_the_policy_on_purpose(make_app):
    client = make_app(**production(NOTIFICATIONS_ALLOW_ANY_RECIPIENT=True)).test_client()
    assert post(client, to="anyone@example.net").status_code == 202
