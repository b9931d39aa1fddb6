"""Schemas declared next to a view: they validate its request and describe it.

``@schema(body=Model, query=Model, responses={201: Model, 404: None})`` on a plain Flask
view (under its blueprint's ``@blueprint.post(...)``) does two things with one
declaration:

- before the view runs, the JSON body and the query string are validated with pydantic;
  the view receives the validated models as keyword arguments ``body=`` and ``query=``,
  and a request that does not match answers **400** with the host's JSON error body,
  ``fields`` listing each failure (``location``, ``field`` path, ``message``), without
  running the view;
- the OpenAPI document (:mod:`core_app.openapi`) reads the declaration from the view.

Everything costly (pydantic's validators, the JSON schemas) is built when the view's
module is imported; a request costs the validation itself and a few attribute lookups.
pydantic itself is imported by the first declaration that names a model, not by
``import core_app``: a process whose plugins declare none does not pay for it.
Validators may read the app's configuration from ``info.context["config"]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Response, current_app, request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from .responses import json_error

if TYPE_CHECKING:  # pydantic is imported by the first schema(): a worker may never need it
    from pydantic import BaseModel, ValidationError

#: The one status of a request that does not match its declared schema, for every plugin.
VALIDATION_STATUS = 400
#: Where the declaration is kept on the view function.
DECLARATION = "__core_app_schema__"
#: Operation fields ``schema(openapi=...)`` may not set: the host owns them.
RESERVED_OPERATION_FIELDS = {"operationId", "tags"}

View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Declaration:
    """What a view declared about its requests and responses."""

    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    #: Status code -> response model (None: no body, or the host's error body for >= 400).
    responses: Mapping[int, type[BaseModel] | str | None] = field(default_factory=dict)
    #: An explicit operationId; unique across every plugin (checked at start-up).
    operation_id: str | None = None
    summary: str | None = None
    description: str | None = None
    #: False: the route is served but left out of the document (the docs page's files).
    documented: bool = True
    #: More fields of the OpenAPI operation (links, deprecated, examples...), merged over
    #: what the host derives.
    openapi: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldError:
    """One failing field: where (``body``, ``query``), its path, and why."""

    location: str
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"location": self.location, "field": self.field, "message": self.message}


#: What a declared body must be, said when it is missing, not JSON, or not an object.
JSON_OBJECT = "required: a JSON object (Content-Type: application/json)"


def schema(
    *,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    responses: Mapping[int, type[BaseModel] | str | None] | None = None,
    operation_id: str | None = None,
    summary: str | None = None,
    description: str | None = None,
    documented: bool = True,
    openapi: Mapping[str, Any] | None = None,
) -> Callable[[View], View]:
    """Declare a view's request body, query string and responses (see the module doc).

    Put it under the route decorator: ``@blueprint.post("/users")`` then ``@schema(...)``.
    ``responses`` maps a status to a model (its JSON body), a description (a body the
    document does not describe), or None (no body; for an error status, the host's JSON
    error body). ``summary`` and ``description`` default to the view's docstring.
    ``documented=False`` serves the route but leaves it out of the document.
    ``openapi`` adds fields of the OpenAPI operation object the declaration does not
    cover (``links`` of a response, ``deprecated``, ``security``...): mappings are merged
    into the derived operation key by key, other values replace. ``operationId`` and
    ``tags`` are the host's (``operation_id=``; one tag per plugin).
    """
    for name, model in (("body", body), ("query", query)):
        if model is not None and not _is_model(model):
            raise TypeError(f"schema({name}=...) takes a pydantic model class, not {model!r}")
    for status, answer in (responses or {}).items():
        if not (answer is None or isinstance(answer, str) or _is_model(answer)):
            raise TypeError(
                f"schema(responses={{{status}: ...}}) takes a pydantic model class, a "
                f"description or None, not {answer!r}"
            )

    if reserved := sorted(set(openapi or {}) & RESERVED_OPERATION_FIELDS):
        raise TypeError(
            f"schema(openapi=...) may not set {', '.join(reserved)}: declare "
            "operation_id=...; each plugin's operations carry its own tag"
        )
    declaration = Declaration(
        body,
        query,
        dict(responses or {}),
        operation_id,
        summary,
        description,
        documented,
        dict(openapi or {}),
    )

    def decorate(view: View) -> View:
        if body is None and query is None:  # nothing to validate: the view as it is
            setattr(view, DECLARATION, declaration)
            return view
        from pydantic import ValidationError

        validate_body = body.__pydantic_validator__.validate_python if body else None
        validate_query = query.__pydantic_validator__.validate_python if query else None

        @functools.wraps(view)
        def validated(*args: Any, **kwargs: Any) -> Any:
            errors: list[FieldError] = []
            context = {"config": current_app.config}  # for validators that need settings
            if validate_query is not None:
                try:
                    kwargs["query"] = validate_query(_query_dict(), context=context)
                except ValidationError as exc:
                    errors += field_errors("query", exc)
            if validate_body is not None:
                data = _json_body()
                if isinstance(data, FieldError):
                    errors.append(data)
                else:
                    try:
                        kwargs["body"] = validate_body(data, context=context)
                    except ValidationError as exc:
                        errors += field_errors("body", exc)
            if errors:
                return invalid(errors)
            return view(*args, **kwargs)

        setattr(validated, DECLARATION, declaration)
        return validated  # type: ignore[return-value]

    return decorate


def declaration_of(view: Callable[..., Any] | None) -> Declaration | None:
    """The declaration made with :func:`schema` on ``view``, if any."""
    found = getattr(view, DECLARATION, None)
    return found if isinstance(found, Declaration) else None


def invalid(errors: Iterable[FieldError]) -> Response:
    """The host's 400 answer naming each failing field; for a view's own checks too
    (``invalid([FieldError("body", "email", "already registered")])``).

    ``errors`` lists each failure with its location; ``fields`` maps each field path
    (the location for the whole body or query) to its first message: the short form.
    """
    errors = list(errors)
    fields: dict[str, str] = {}
    for error in errors:
        fields.setdefault(error.field or error.location, error.message)
    summary = "; ".join(f"{name}: {message}" for name, message in fields.items())
    return json_error(
        VALIDATION_STATUS,
        "Bad Request",
        f"The request is invalid: {summary}",
        fields=fields,
        errors=[error.as_dict() for error in errors],
    )


def field_errors(location: str, exc: ValidationError) -> list[FieldError]:
    """pydantic's errors as :class:`FieldError` (the input values are left out: they
    may be long, or secret)."""
    return [
        FieldError(location, ".".join(str(part) for part in error["loc"]), error["msg"])
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _json_body() -> dict[str, Any] | FieldError:
    """The JSON object in the body, or why there is none. Malformed JSON, and JSON that
    the host refuses (too deep, not text: wrappers.py), say so in the error."""
    try:
        data = request.get_json()
    except UnsupportedMediaType:  # not application/json
        return FieldError("body", "", JSON_OBJECT)
    except BadRequest as exc:
        generic = exc.description == BadRequest.description  # Flask hides the cause
        why = "not valid JSON" if generic else exc.description
        return FieldError("body", "", f"{why}; {JSON_OBJECT}")
    return data if isinstance(data, dict) else FieldError("body", "", JSON_OBJECT)


def _query_dict() -> dict[str, str | list[str]]:
    """The query string, a repeated parameter as a list of its values."""
    return {
        name: values[0] if len(values) == 1 else values for name, values in request.args.lists()
    }


def _is_model(model: object) -> bool:
    from pydantic import BaseModel

    return isinstance(model, type) and issubclass(model, BaseModel)
