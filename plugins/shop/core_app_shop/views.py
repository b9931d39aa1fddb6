"""Routes of the shop, under /api/shop."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core_app import BrokerUnavailable, FieldError, TaskUnavailable, invalid, schema, send_task
from core_app.db import session
from core_app.outbox import enqueue

from . import schemas
from .constants import SEND_EMAIL_TASK, URL_PREFIX
from .enums import ReceiptStatus
from .models import Purchase, User

log = logging.getLogger(__name__)

blueprint = Blueprint("shop", __name__, url_prefix=URL_PREFIX)


@blueprint.get("/home")
@schema(responses={200: schemas.Welcome})
def home() -> dict[str, Any]:
    """A greeting: the plugin is mounted and serving."""
    return {"plugin": "shop", "message": "Welcome to the shop."}


@blueprint.get("/users")
@schema(responses={200: schemas.Users})
def list_users() -> dict[str, Any]:
    """Every user, oldest first."""
    users = session().scalars(select(User).order_by(User.id))
    return {"users": [user.as_dict() for user in users]}


@blueprint.post("/users")
@schema(body=schemas.UserIn, responses={201: schemas.User, 400: None})
def create_user(body: schemas.UserIn) -> Response | tuple[dict[str, Any], int]:
    """Register a user; 400 when the address is already registered."""
    db = session()
    user = User(name=body.name, email=body.email)
    db.add(user)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        return invalid([FieldError("body", "email", "already registered")])
    return user.as_dict(), 201


@blueprint.get("/purchases")
@schema(responses={200: schemas.Purchases})
def list_purchases() -> dict[str, Any]:
    """Every purchase, oldest first."""
    purchases = session().scalars(select(Purchase).order_by(Purchase.id))
    return {"purchases": [purchase.as_dict() for purchase in purchases]}


@blueprint.post("/purchases")
@schema(body=schemas.PurchaseIn, responses={201: schemas.PurchaseCreated, 400: None})
def create_purchase(body: schemas.PurchaseIn) -> Response | tuple[dict[str, Any], int]:
    """Record a purchase and email its receipt; 400 when the user does not exist."""
    db = session()
    user = db.get(User, body.user_id)
    if user is None:
        return invalid([FieldError("body", "user_id", "no such user")])
    purchase = Purchase(**body.model_dump())
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
