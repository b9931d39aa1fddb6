"""Routes of the shop, under /api/shop."""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

from flask import Blueprint, Response, current_app, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core_app import BrokerUnavailable, TaskUnavailable, json_error, send_task
from core_app.db import session
from core_app.outbox import enqueue

from .constants import (
    MAX_EMAIL_LENGTH,
    MAX_ITEM_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PRICE_CENTS,
    MAX_QUANTITY,
    SEND_EMAIL_TASK,
    URL_PREFIX,
)
from .enums import ReceiptStatus
from .models import Purchase, User

log = logging.getLogger(__name__)

blueprint = Blueprint("shop", __name__, url_prefix=URL_PREFIX)


class Invalid(Exception):
    """A request body that fails validation; becomes a 400 JSON answer."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


@blueprint.errorhandler(Invalid)
def _invalid(exc: Invalid) -> Response:
    return json_error(400, "Bad Request", "The request body is invalid.", fields=exc.errors)


def _json_object() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Invalid({"body": "expected a JSON object (Content-Type: application/json)"})
    return body


#: Control characters (CR, LF, NUL...), surrogates, line and paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
#: One plain address: no spaces, lists, quotes, brackets or display names. The
#: notifications plugin checks it again, fully, before it sends anything.
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"  # an ASCII local part (RFC 5322 atoms)
    r"@[^\s@,;:<>()\[\]\\\"]+\.[^\s@,;:<>()\[\]\\\"]+"  # a dotted domain, IDN allowed
)


def _text(body: dict[str, Any], field: str, limit: int, errors: dict[str, str]) -> str:
    """A one-line text: names, items and addresses end up in emails."""
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        errors[field] = "required, a non-empty string"
        return ""
    if len(value) > limit:
        errors[field] = f"at most {limit} characters"
    elif any(unicodedata.category(char) in _UNSAFE_CATEGORIES for char in value):
        errors[field] = "must not contain control or line-break characters"
    elif "=?" in value:
        errors[field] = "must not contain '=?' (an encoded word in an email header)"
    return value.strip()


def _integer(body: dict[str, Any], field: str, low: int, high: int, errors: dict[str, str]) -> int:
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors[field] = f"required, an integer from {low} to {high}"
        return 0
    return value


@blueprint.get("/home")
def home() -> dict[str, Any]:
    return {"plugin": "shop", "message": "Welcome to the shop."}


@blueprint.get("/users")
def list_users() -> dict[str, Any]:
    users = session().scalars(select(User).order_by(User.id))
    return {"users": [user.as_dict() for user in users]}


@blueprint.post("/users")
def create_user() -> tuple[dict[str, Any], int]:
    body, errors = _json_object(), {}
    name = _text(body, "name", MAX_NAME_LENGTH, errors)
    email = _text(body, "email", MAX_EMAIL_LENGTH, errors)
    if email and "email" not in errors and not _EMAIL.fullmatch(email):
        errors["email"] = "must be one email address, such as ann@example.org"
    if errors:
        raise Invalid(errors)
    db = session()
    user = User(name=name, email=email)
    db.add(user)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise Invalid({"email": "already registered"}) from None
    return user.as_dict(), 201


@blueprint.get("/purchases")
def list_purchases() -> dict[str, Any]:
    purchases = session().scalars(select(Purchase).order_by(Purchase.id))
    return {"purchases": [purchase.as_dict() for purchase in purchases]}


@blueprint.post("/purchases")
def create_purchase() -> tuple[dict[str, Any], int]:
    body, errors = _json_object(), {}
    user_id = _integer(body, "user_id", 1, 2**62, errors)
    item = _text(body, "item", MAX_ITEM_LENGTH, errors)
    quantity = _integer(body, "quantity", 1, MAX_QUANTITY, errors)
    price_cents = _integer(body, "price_cents", 0, MAX_PRICE_CENTS, errors)
    if errors:
        raise Invalid(errors)
    db = session()
    user = db.get(User, user_id)
    if user is None:
        raise Invalid({"user_id": "no such user"})
    purchase = Purchase(user_id=user_id, item=item, quantity=quantity, price_cents=price_cents)
    db.add(purchase)
    db.flush()  # its id, for the receipt
    outbox = current_app.config["SHOP_RECEIPTS_THROUGH_OUTBOX"]
    receipt = _queue_receipt(user, purchase) if outbox else None
    db.commit()  # the purchase and its receipt's message, together; then it is published
    if receipt is None:
        receipt = _send_receipt_now(user, purchase)
    answer = purchase.as_dict()
    del answer["created_at"]
    return {**answer, "receipt": receipt}, 201


def _receipt(user: User, purchase: Purchase) -> dict[str, str]:
    total = purchase.quantity * purchase.price_cents / 100
    return {
        "to": user.email,
        "subject": f"Your receipt for purchase #{purchase.id}",
        "body": f"Dear {user.name},\n\nYou bought {purchase.quantity} x "
        f"{purchase.item} for {total:.2f} in total.\n",
    }


def _queue_receipt(user: User, purchase: Purchase) -> dict[str, Any]:
    """Queue the receipt email in the purchase's transaction (the host's outbox): it is
    sent if and only if the purchase is stored, even when the broker is down now."""
    try:
        task_id = enqueue(session(), SEND_EMAIL_TASK, kwargs=_receipt(user, purchase))
    except TaskUnavailable:
        log.warning(
            "purchase %s: no receipt, the notifications plugin is not available", purchase.id
        )
        return {"status": ReceiptStatus.NO_NOTIFICATIONS}
    return {"status": ReceiptStatus.QUEUED, "task_id": task_id}


def _send_receipt_now(user: User, purchase: Purchase) -> dict[str, Any]:
    """``SHOP_RECEIPTS_THROUGH_OUTBOX=false``: send_task after the commit, one write
    fewer, and the receipt is lost when the broker is down at that moment."""
    try:
        result = send_task(SEND_EMAIL_TASK, kwargs=_receipt(user, purchase))
    except TaskUnavailable:
        log.warning(
            "purchase %s: no receipt, the notifications plugin is not available", purchase.id
        )
        return {"status": ReceiptStatus.NO_NOTIFICATIONS}
    except BrokerUnavailable as exc:
        log.error("purchase %s: receipt not queued: %s", purchase.id, exc)
        return {"status": ReceiptStatus.BROKER_DOWN}
    return {"status": ReceiptStatus.QUEUED, "task_id": result.id}
