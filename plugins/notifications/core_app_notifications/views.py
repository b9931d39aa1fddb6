"""Routes of the notifications plugin, under /api/notifications.

``POST /emails`` checks the email (:class:`.validation.EmailIn`: 400 naming each bad
field, before the view runs), queues it and answers 202 with its id and status URL. The
id is signed with the app's ``SECRET_KEY`` and carries the time it was issued, so
``GET /emails/<id>`` answers 404 for an id this API never issued (Celery itself says
PENDING for any id it has no record of) and tells how long an issued email has waited
(``queued_at``): PENDING for an hour means
no worker consumed it, not that the id is wrong.
"""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

from celery.result import AsyncResult
from flask import Blueprint, Response, current_app, url_for
from itsdangerous import BadSignature, TimestampSigner
from pydantic import BaseModel, Field

from core_app import json_error, schema

from .constants import URL_PREFIX
from .tasks import send_email
from .validation import EmailIn

blueprint = Blueprint("notifications", __name__, url_prefix=URL_PREFIX)


class EmailQueued(BaseModel):
    task_id: str
    status_url: str


class EmailStatus(BaseModel):
    task_id: str
    state: str = Field(description="Celery's state: PENDING, STARTED, RETRY, SUCCESS...")
    queued_at: str = Field(description="When the id was issued, UTC, ISO 8601.")
    result: dict[str, Any] | None = Field(default=None, description="When sent.")
    error: str | None = Field(default=None, description="When sending failed for good.")


def _signer() -> TimestampSigner:
    return TimestampSigner(current_app.secret_key, salt="core_app_notifications.email-id")


#: The queued email's status: the next call a client makes (the docs page shows it, and
#: schemathesis follows it).
STATUS_LINK = {
    "status": {
        "operationId": "notifications.email_status",
        "parameters": {"task_id": "$response.body#/task_id"},
        "description": "The state of the email just queued (also its Location header).",
    }
}


@blueprint.post("/emails")
@schema(
    body=EmailIn, responses={202: EmailQueued}, openapi={"responses": {202: {"links": STATUS_LINK}}}
)
def queue_email(body: EmailIn) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Queue one email; its status is at status_url (the Location header)."""
    task_id = _signer().sign(uuid.uuid4().hex).decode()
    result = send_email.apply_async(kwargs=body.model_dump(), task_id=task_id)
    status_url = url_for(".email_status", task_id=result.id)
    return {"task_id": result.id, "status_url": status_url}, 202, {"Location": status_url}


@blueprint.get("/emails/<task_id>")
@schema(responses={200: EmailStatus, 404: None})
def email_status(task_id: str) -> Response | dict[str, Any]:
    """The state of a queued email; 404 for an id this API never issued."""
    try:
        _, issued = _signer().unsign(task_id, return_timestamp=True)
    except BadSignature:
        return json_error(404, "Not Found", "No email was queued with this id.")
    result = AsyncResult(task_id, app=current_app.extensions["celery"])
    answer: dict[str, Any] = {
        "task_id": task_id,
        "state": result.state,
        "queued_at": issued.astimezone(UTC).isoformat(timespec="seconds"),
    }
    if result.successful():
        answer["result"] = result.result
    elif result.failed():
        answer["error"] = f"{type(result.result).__name__}: {result.result}"
    return answer
