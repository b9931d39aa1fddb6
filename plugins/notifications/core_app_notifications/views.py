"""Routes of the notifications plugin, under /api/notifications."""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult
from flask import Blueprint, Response, current_app, request, url_for

from core_app import json_error

from .constants import MAX_ADDRESS_LENGTH, MAX_BODY_LENGTH, MAX_SUBJECT_LENGTH, URL_PREFIX
from .tasks import send_email

blueprint = Blueprint("notifications", __name__, url_prefix=URL_PREFIX)

_LIMITS = {"to": MAX_ADDRESS_LENGTH, "subject": MAX_SUBJECT_LENGTH, "body": MAX_BODY_LENGTH}


@blueprint.post("/emails")
def queue_email() -> Response | tuple[dict[str, Any], int, dict[str, str]]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return json_error(400, "Bad Request", "Expected a JSON object with to, subject, body.")
    errors = {
        field: f"required, a string of at most {limit} characters"
        for field, limit in _LIMITS.items()
        if not isinstance(body.get(field), str) or len(body[field]) > limit
    }
    if not errors and "@" not in body["to"]:
        errors["to"] = "must be an email address"
    if errors:
        return json_error(400, "Bad Request", "The email is invalid.", fields=errors)
    result = send_email.apply_async(
        kwargs={"to": body["to"], "subject": body["subject"], "body": body["body"]}
    )
    status_url = url_for(".email_status", task_id=result.id)
    return {"task_id": result.id, "status_url": status_url}, 202, {"Location": status_url}


@blueprint.get("/emails/<task_id>")
def email_status(task_id: str) -> dict[str, Any]:
    result = AsyncResult(task_id, app=current_app.extensions["celery"])
    answer: dict[str, Any] = {"task_id": task_id, "state": result.state}
    if result.successful():
        answer["result"] = result.result
    elif result.failed():
        answer["error"] = f"{type(result.result).__name__}: {result.result}"
    return answer
