"""SMTP over TLS (``smtps://``) and STARTTLS (``?starttls=true``) against a real aiosmtpd
server, with a throwaway CA and certificate made for the test (trustme).

Certificates are verified (the CA from ``NOTIFICATIONS_SMTP_CA_FILE``, else the system's),
and a password never goes over plain text unless the operator allows it.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from smtplib import SMTPNotSupportedError

import pytest
import trustme
from core_app_notifications.mail import UnsafeSettings
from core_app_notifications.tasks import send_email

from core_app import PluginDeclarationError
from core_app.testing import SmtpSink

EMAIL = {"to": "ada@example.com", "subject": "Over TLS", "body": "Hello, Ada."}
USER, PASSWORD = "mailer", "s3cret: /@?"


@pytest.fixture
def core_app_plugins():
    return ["notifications"]


def sessions(sink: SmtpSink) -> list[tuple[bool, bool, list[str]]]:
    """(encrypted, logged in, recipients) of each message the sink accepted."""
    return [(mail.tls, mail.authenticated, mail.recipients) for mail in sink.received]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[SmtpSink, int]]]:
    """Start SMTP sinks: ``start(auth=False, **smtp_options)`` returns (sink, port)."""
    with contextlib.ExitStack() as stack:

        def start(auth: bool = False, **options: object) -> tuple[SmtpSink, int]:
            credentials = (USER, PASSWORD) if auth else None
            sink = SmtpSink(credentials=credentials, server_hostname="localhost", **options)
            stack.enter_context(sink)
            return sink, sink.port

        yield start


def send(make_app, url: str, **settings: object):
    app = make_app(NOTIFICATIONS_SMTP_URL=url, **settings)
    with app.app_context():
        return send_email.apply(kwargs=EMAIL)


def test_smtps_verifies_the_certificate_and_logs_in(make_app, smtp_server, server_context, ca_file):
    inbox, port = smtp_server(ssl_context=server_context, auth=True)
    url = f"smtps://{USER}:s3cret%3A%20%2F%40%3F@localhost:{port}"
    result = send(make_app, url, NOTIFICATIONS_SMTP_CA_FILE=ca_file)
    assert result.successful(), result.result
    assert inbox.logins == [(USER, PASSWORD)]
    assert sessions(inbox) == [(True, True, ["ada@example.com"])]


def test_starttls_verifies_the_certificate_and_logs_in(
    make_app, smtp_server, server_context, ca_file
):
    inbox, port = smtp_server(tls_context=server_context, require_starttls=True, auth=True)
    url = f"smtp://{USER}:s3cret%3A%20%2F%40%3F@localhost:{port}?starttls=true"
    result = send(make_app, url, NOTIFICATIONS_SMTP_CA_FILE=ca_file)
    assert result.successful(), result.result
    assert inbox.logins == [(USER, PASSWORD)]
    assert sessions(inbox) == [(True, True, ["ada@example.com"])]


@pytest.mark.parametrize("scheme", ["smtps", "starttls"])
def test_a_certificate_from_an_unknown_ca_is_refused_without_retries(
    make_app, smtp_server, server_context, scheme
):
    if scheme == "smtps":
        inbox, port = smtp_server(ssl_context=server_context, auth=True)
        url = f"smtps://{USER}:{PASSWORD.split(':')[0]}@localhost:{port}"
    else:
        inbox, port = smtp_server(tls_context=server_context, require_starttls=True, auth=True)
        url = f"smtp://{USER}:{PASSWORD.split(':')[0]}@localhost:{port}?starttls=true"
    result = send(make_app, url)  # no CA file: the system's CAs do not know ours
    assert result.failed()
    assert isinstance(result.result, ssl.SSLCertVerificationError), result.result
    assert inbox.logins == [] and inbox.received == []


def test_a_certificate_for_another_host_name_is_refused(
    make_app, smtp_server, ca, ca_file, tmp_path
):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mail.example.org").configure_cert(context)
    inbox, port = smtp_server(ssl_context=context)
    result = send(make_app, f"smtps://localhost:{port}", NOTIFICATIONS_SMTP_CA_FILE=ca_file)
    assert result.failed() and isinstance(result.result, ssl.SSLCertVerificationError)
    assert inbox.received == []


def test_starttls_asked_for_but_not_offered_fails_instead_of_sending_in_plain_text(
    make_app, smtp_server, ca_file
):
    inbox, port = smtp_server()  # no TLS at all
    result = send(
        make_app, f"smtp://localhost:{port}?starttls=true", NOTIFICATIONS_SMTP_CA_FILE=ca_file
    )
    assert result.failed() and isinstance(result.result, SMTPNotSupportedError), result.result
    assert inbox.received == []


def test_a_password_over_plain_smtp_is_refused_at_start_and_in_the_task(make_app, smtp_server):
    inbox, port = smtp_server(auth=True)
    url = f"smtp://{USER}:pw@localhost:{port}"
    with pytest.raises(PluginDeclarationError, match="plain text") as info:
        make_app(NOTIFICATIONS_SMTP_URL=url)
    assert "NOTIFICATIONS_SMTP_ALLOW_PLAINTEXT_LOGIN" in str(info.value)

    # Settings that changed after start (or a worker that skipped the check) fail too.
    app = make_app()
    app.config["NOTIFICATIONS_SMTP_URL"] = url
    with app.app_context():
        result = send_email.apply(kwargs=EMAIL)
    assert result.failed() and isinstance(result.result, UnsafeSettings)
    assert inbox.logins == [] and inbox.received == []


def test_plain_text_login_when_the_operator_allows_it(make_app, smtp_server):
    inbox, port = smtp_server(auth=True)
    url = f"smtp://{USER}:s3cret%3A%20%2F%40%3F@localhost:{port}"
    result = send(make_app, url, NOTIFICATIONS_SMTP_ALLOW_PLAINTEXT_LOGIN=True)
    assert result.successful(), result.result
    assert sessions(inbox) == [(False, True, ["ada@example.com"])]


@pytest.mark.parametrize(
    "url",
    ["http://localhost:25", "smtp://", "smtps://localhost:465?starttls=true", "smtp://h?tls=1"],
)
def test_a_malformed_smtp_url_is_refused_at_start(make_app, url):
    with pytest.raises(PluginDeclarationError, match=r"NOTIFICATIONS_SMTP_URL|smtps://"):
        make_app(NOTIFICATIONS_SMTP_URL=url)
