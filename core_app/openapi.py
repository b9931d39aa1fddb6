"""One OpenAPI 3.1 document for the host and every active plugin, built from the URL map.

Every rule of the app is attributed to its owner (:mod:`core_app.hostapp`): the host's
own routes and the app owner's (``run.py``) go under the host's tag, each active
plugin's under a tag of its own, carrying its distribution's name, version and summary.
Rules of a plugin that failed after it was mounted stay in the map (they answer 503) and
are left out. A route without a declaration still appears with its methods and its path
parameters, typed from their Werkzeug converters; a view declared with
:func:`core_app.schemas.schema` adds its body, query parameters and responses, whose
pydantic schemas (JSON Schema 2020-12, as OpenAPI 3.1 takes it) go under
``components/schemas`` named ``<plugin>.<Model>`` so two plugins' models never collide.

operationIds: a view's endpoint (``shop.create_user``, unique in a Flask app; the method
is appended when one view serves several), or the ``operation_id`` it declares. A
declared id that another view already uses is refused at start-up
(:func:`check_operation_ids`), naming both sides, like any other conflict.

The document is built once per app, on first use, and kept (:func:`openapi_document`):
building it costs start-up nothing, and every rule is in place by then.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, metadata
from typing import TYPE_CHECKING, Any

from flask import Flask

from .builtins import BUILTIN_NAME
from .discovery import HOST_DISTRIBUTION, host_version
from .errors import PluginConflictError
from .openapi_paths import openapi_path
from .plugins import PluginHost
from .records import AUTOMATIC_METHODS
from .routes import APP, label
from .schemas import VALIDATION_STATUS, Declaration, declaration_of

if TYPE_CHECKING:
    from pydantic import BaseModel
    from werkzeug.routing import Rule

OPENAPI_VERSION = "3.1.0"
#: Where the document, and its JSON text, are kept in ``app.extensions`` once built.
EXTENSION = "core_app.openapi"
JSON_EXTENSION = "core_app.openapi.json"
#: The tag of the host's own routes and of the app owner's.
HOST_TAG = BUILTIN_NAME
_SCHEMAS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
_ERROR = "Error"

#: The JSON error body of every route (core_app.responses.json_error).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The host's JSON error body, for every error status of every route.",
    "required": ["error", "message", "status"],
    "properties": {
        "error": {"type": "string", "description": "The status's name."},
        "message": {"type": "string"},
        "status": {"type": "integer"},
        "fields": {
            "type": "object",
            "description": f"With status {VALIDATION_STATUS}: each failing field's path (the "
            "location for the whole body or query) and its first message.",
            "additionalProperties": {"type": "string"},
        },
        "errors": {
            "type": "array",
            "description": f"With status {VALIDATION_STATUS}: each failure, with its location.",
            "items": {
                "type": "object",
                "required": ["location", "field", "message"],
                "properties": {
                    "location": {"type": "string", "enum": ["body", "query"]},
                    "field": {"type": "string", "description": "Dotted path; '' the whole."},
                    "message": {"type": "string"},
                },
            },
        },
    },
}
#: Error responses shared by the operations, by status.
_SHARED_ERRORS = {
    VALIDATION_STATUS: "ValidationFailed",
    404: "NotFound",
    500: "InternalServerError",
}


@dataclass(frozen=True, eq=False)  # each operation is its own key (Rules do not hash)
class Operation:
    """One method of one URL rule, and who owns it."""

    owner: str
    rule: Rule
    method: str
    declaration: Declaration | None
    view: Any


def openapi_document(app: Flask) -> dict[str, Any]:
    """The app's document, built on first use and kept for the app's life."""
    document = app.extensions.get(EXTENSION)
    if document is None:
        document = app.extensions[EXTENSION] = build_document(app)
    return document


def openapi_json(app: Flask) -> str:
    """The document as JSON text (what ``OPENAPI_URL`` serves), made once."""
    text = app.extensions.get(JSON_EXTENSION)
    if text is None:
        text = app.extensions[JSON_EXTENSION] = json.dumps(openapi_document(app), indent=2)
    return text


def build_document(app: Flask) -> dict[str, Any]:
    """The document as it stands now (see the module docstring)."""
    host: PluginHost = app.extensions["core_app"]
    operations = list(active_operations(app, host))
    ids = operation_ids(operations)
    models = _model_schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        path, parameters = openapi_path(operation.rule)
        entry = _operation(operation, ids[operation], parameters, models)
        paths.setdefault(path, {})[operation.method.lower()] = entry
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"{app.name} API",
            "version": host_version(),
            "description": "Every route of the host and of each active plugin, one tag each.",
        },
        "tags": _tags(host, {operation.owner for operation in operations}),
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {_ERROR: ERROR_SCHEMA, **dict(sorted(models.schemas.items()))},
            "responses": {name: _error_response(status) for status, name in _SHARED_ERRORS.items()},
        },
    }


def active_operations(app: Flask, host: PluginHost) -> Iterator[Operation]:
    """Each method of each rule the host or an active plugin serves, in rule order."""
    endpoints: dict[str, str] = getattr(getattr(app, "owners", None), "endpoints", {})
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        owner = endpoints.get(rule.endpoint, APP)
        if owner == APP:
            owner = HOST_TAG
        record = host.records.get(owner)
        if record is None or not record.active:
            continue
        view = app.view_functions.get(rule.endpoint)
        declaration = declaration_of(view)
        if declaration is not None and not declaration.documented:
            continue
        for method in sorted((rule.methods or {"GET"}) - AUTOMATIC_METHODS):
            yield Operation(owner, rule, method, declaration, view)


def operation_ids(operations: list[Operation]) -> dict[Operation, str]:
    """Each operation's id: the one its view declares, else its endpoint; with the method
    appended when the view serves several operations, and a number after that when one
    view has several rules with the same method."""
    per_endpoint = Counter(op.rule.endpoint for op in operations)
    ids: dict[Operation, str] = {}
    for op in operations:
        name = _declared_id(op) or op.rule.endpoint
        ids[op] = name if per_endpoint[op.rule.endpoint] == 1 else f"{name}.{op.method.lower()}"
    seen: Counter[str] = Counter()
    for op, name in ids.items():
        seen[name] += 1
        if seen[name] > 1:
            ids[op] = f"{name}.{seen[name]}"
    return ids


def check_operation_ids(app: Flask, host: PluginHost) -> None:
    """Refuse (as any conflict: strict mode stops start-up, lenient skips the plugin) a
    plugin that declares an operationId that another view uses: an endpoint, or an id
    declared by the host, a plugin loaded before it, or another of its own views."""
    operations = list(active_operations(app, host))
    taken = {op.rule.endpoint: (op.owner, op.rule.endpoint) for op in operations}
    position = {name: index for index, name in enumerate(host.records)}  # load order
    declared = [op for op in operations if _declared_id(op)]
    declared.sort(key=lambda op: position[op.owner])
    for op in declared:
        name, record = _declared_id(op), host.records[op.owner]
        owner, endpoint = taken.setdefault(name, (op.owner, op.rule.endpoint))
        if endpoint == op.rule.endpoint or not (record.active and host.records[owner].active):
            continue
        other = f"its view {endpoint}" if owner == op.owner else label(owner)
        host.fail(
            record,
            PluginConflictError(
                op.owner,
                f"its view {op.rule.endpoint} ({op.method} {op.rule.rule}) declares the "
                f"operationId {name!r}, which {other} already uses.",
                "declare another operation_id in @schema(...) (operationIds are unique "
                "across every plugin of the API).",
                other=label(owner),
            ),
        )


def _declared_id(op: Operation) -> str | None:
    return op.declaration.operation_id if op.declaration is not None else None


# -- one operation ----------------------------------------------------------------------


def _operation(
    op: Operation,
    operation_id: str,
    parameters: list[dict[str, Any]],
    models: _Models,
) -> dict[str, Any]:
    declared = op.declaration or Declaration()
    entry: dict[str, Any] = {"tags": [op.owner], "operationId": operation_id}
    first, _, rest = (getattr(op.view, "__doc__", None) or "").strip().partition("\n")
    if summary := declared.summary or first.strip():
        entry["summary"] = summary
    if description := declared.description or rest.strip():
        entry["description"] = description
    if declared.query is not None:
        parameters = parameters + _query_parameters(models.resolved(declared.query, "validation"))
    if parameters:
        entry["parameters"] = parameters
    if declared.body is not None:
        entry["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": models.ref(declared.body, "validation")}},
        }
    responses: dict[str, Any] = {}
    for status, model in sorted(declared.responses.items()) or [(200, None)]:
        responses[str(status)] = _response(status, model, models)
    if declared.body is not None or declared.query is not None:
        responses.setdefault(str(VALIDATION_STATUS), _shared(VALIDATION_STATUS))
    if any(p["in"] == "path" for p in parameters):
        responses.setdefault("404", _shared(404))
    responses.setdefault("500", _shared(500))
    entry["responses"] = responses
    return _merged(entry, declared.openapi)


def _merged(derived: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``derived`` with ``extra`` over it: mappings merged key by key, the rest replaced.
    Keys are JSON's strings: ``{"responses": {202: ...}}`` extends the derived ``"202"``."""
    merged = dict(derived)
    for raw_key, value in extra.items():
        key = str(raw_key)
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            value = _merged(old, value)
        merged[key] = value
    return merged


def _response(status: int, model: type[BaseModel] | str | None, models: _Models) -> dict[str, Any]:
    if isinstance(model, str):
        return {"description": model}
    if model is not None:
        return {
            "description": _phrase(status),
            "content": {"application/json": {"schema": models.ref(model, "serialization")}},
        }
    if status >= 400:
        return _shared(status) if status in _SHARED_ERRORS else _error_response(status)
    return {"description": _phrase(status)}


def _shared(status: int) -> dict[str, str]:
    return {"$ref": _RESPONSES + _SHARED_ERRORS[status]}


def _error_response(status: int) -> dict[str, Any]:
    description = _phrase(status)
    if status == VALIDATION_STATUS:
        description += ": the request does not match its schema; fields lists each failure."
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _SCHEMAS + _ERROR}}},
    }


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Status {status}"


def _query_parameters(model_schema: dict[str, Any]) -> list[dict[str, Any]]:
    """One parameter per field of a query model."""
    required = set(model_schema.get("required", ()))
    parameters = []
    for name, schema in model_schema.get("properties", {}).items():
        parameter = {"name": name, "in": "query", "required": name in required}
        if "description" in schema:
            parameter["description"] = schema["description"]
        parameter["schema"] = schema
        parameters.append(parameter)
    return parameters


# -- models and tags --------------------------------------------------------------------


@dataclass
class _Models:
    """Every declared model's schema, under ``<owner>.<Model>``, and each (model, mode)'s
    component name (``validation`` for requests, ``serialization`` for responses)."""

    schemas: dict[str, Any]
    names: dict[tuple[type[BaseModel], str], str]

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, str]:
        return {"$ref": _SCHEMAS + self.names[(model, mode)]}

    def resolved(self, model: type[BaseModel], mode: str) -> dict[str, Any]:
        return self.schemas[self.names[(model, mode)]]  # type: ignore[no-any-return]


def _model_schemas(operations: list[Operation]) -> _Models:
    from pydantic import BaseModel
    from pydantic.json_schema import models_json_schema

    wanted: dict[str, dict[tuple[type[BaseModel], str], None]] = {}
    for op in operations:
        if op.declaration is None:
            continue
        models = wanted.setdefault(op.owner, {})
        for model in (op.declaration.body, op.declaration.query):
            if model is not None:
                models[(model, "validation")] = None
        for answer in op.declaration.responses.values():
            if answer is not None and not isinstance(answer, str):
                models[(answer, "serialization")] = None
    found = _Models({}, {})
    for owner, models in wanted.items():
        template = f"{_SCHEMAS}{owner}.{{model}}"
        refs, defs = models_json_schema(list(models), ref_template=template)  # type: ignore[arg-type]
        for name, definition in defs.get("$defs", {}).items():
            found.schemas[f"{owner}.{name}"] = definition
        for (declared, mode), ref in refs.items():
            assert issubclass(declared, BaseModel)  # schema() takes models only
            found.names[(declared, mode)] = ref["$ref"].removeprefix(_SCHEMAS)
    return found


def _tags(host: PluginHost, owners: set[str]) -> list[dict[str, Any]]:
    """The host's tag, then one per active plugin, with its distribution's metadata."""
    tags = []
    for record in sorted(host.active(), key=lambda r: (not r.builtin, r.name)):
        if not record.builtin and record.name not in owners and not record.routes:
            continue
        distribution = HOST_DISTRIBUTION if record.builtin else record.distribution
        summary = _summary(distribution) or f"The {record.name} plugin."
        if record.builtin:
            summary = "The host's own routes (and the app's, from run.py). " + summary
        origin = f"{distribution} {record.version}" if distribution else "no distribution"
        tags.append(
            {
                "name": record.name,
                "description": f"{summary}\n\nDistribution: {origin}.",
                "x-distribution": distribution,
                "x-version": record.version,
            }
        )
    return tags


def _summary(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return metadata(distribution)["Summary"]
    except PackageNotFoundError:
        return None
