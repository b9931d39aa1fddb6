"""The baseline: the example plugins' routes wired by hand on a plain Flask app.

This is what a Flask developer would write without core_app: register the notifications
blueprint, set the configuration keys its views read, and write the shop's routes with
SQLAlchemy directly (an engine, a session per request closed at teardown, the shop's
models and the same queries as its views). ``BENCH_DATABASE_URL`` names the database
(default: SQLite in the instance folder, its tables made with ``create_all``). Served
the same way as the host (``gunicorn "handwired_app:app"`` from this folder).

It also has ``POST /sync-email``, the thing offloading replaces: build the email and
hand it to an SMTP server with :mod:`smtplib` inside the request (``BENCH_SMTP_PORT``).
"""

from __future__ import annotations

import os
import smtplib
import tempfile
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from core_app_notifications.views import blueprint as notifications_blueprint
from core_app_shop.models import Base, User
from flask import Blueprint, Flask, current_app, g, request
from sqlalchemy import create_engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

shop = Blueprint("shop", __name__, url_prefix="/api/shop")


@shop.get("/home")
def home() -> dict[str, Any]:
    return {"plugin": "shop", "message": "Welcome to the shop."}


def db() -> Session:
    if "db" not in g:
        g.db = current_app.extensions["sessions"]()
    return g.db  # type: ignore[no-any-return]


def close_db(exc: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


@shop.get("/users")
def list_users() -> dict[str, Any]:
    users = db().scalars(select(User).order_by(User.id))
    return {"users": [user.as_dict() for user in users]}


@shop.post("/users")
def create_user() -> tuple[dict[str, Any], int]:
    body = request.get_json(silent=True) or {}
    user = User(name=str(body.get("name")), email=str(body.get("email")))
    db().add(user)
    try:
        db().commit()
    except IntegrityError:
        return {"error": "Bad Request", "message": "already registered"}, 400
    return user.as_dict(), 201


def create_handwired_app(instance_path: str | None = None) -> Flask:
    instance = (
        instance_path
        or os.environ.get("BENCH_INSTANCE_PATH")
        or os.path.join(tempfile.gettempdir(), "core_app_handwired_instance")
    )
    os.makedirs(instance, exist_ok=True)
    app = Flask(__name__, instance_path=instance, static_folder=None)
    app.config.from_mapping(
        SECRET_KEY="handwired-benchmark-not-secret",
        # the keys the notifications views and tasks read
        NOTIFICATIONS_SMTP_URL=None,
        NOTIFICATIONS_SMTP_TIMEOUT=10,
        NOTIFICATIONS_SENDER="core-app@localhost",
        NOTIFICATIONS_OUTBOX="outbox",
        NOTIFICATIONS_MAX_RETRIES=5,
        NOTIFICATIONS_RETRY_DELAY=2.0,
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
        BENCH_SMTP_PORT=int(os.environ.get("BENCH_SMTP_PORT", "0")),
    )
    url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{instance}/handwired.sqlite3"
    engine = create_engine(url, pool_pre_ping=True)  # as core_app's engines
    if url.startswith("sqlite"):
        Base.metadata.create_all(engine)
    app.extensions["sessions"] = sessionmaker(engine, expire_on_commit=False)
    app.teardown_appcontext(close_db)
    app.register_blueprint(shop)
    app.register_blueprint(notifications_blueprint)
    app.add_url_rule("/sync-email", view_func=sync_email, methods=["POST"])
    return app


def sync_email() -> tuple[dict[str, Any], int]:
    """Send the email now, in the request, through the SMTP server on BENCH_SMTP_PORT."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k), str) for k in ("to", "subject", "body")
    ):
        return {"error": "Bad Request", "message": "Expected to, subject, body."}, 400
    message = EmailMessage()
    message["From"] = current_app.config["NOTIFICATIONS_SENDER"]
    message["To"] = body["to"]
    message["Subject"] = body["subject"]
    message["Message-ID"] = make_msgid(domain="core-app.local")
    message.set_content(body["body"])
    port = current_app.config["BENCH_SMTP_PORT"]
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message)
    return {"sent": True, "message_id": message["Message-ID"]}, 200


app = create_handwired_app()
