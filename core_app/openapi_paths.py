"""Werkzeug URL rules in OpenAPI form: ``/users/<int:user_id>`` is ``/users/{user_id}``,
with ``user_id`` an integer path parameter. Typed from the rule's converters, so a route
that declares nothing is still described by what it matches."""

from __future__ import annotations

from typing import Any

from werkzeug.routing import Rule, parse_converter_args

from .routes import RULE_PART


def openapi_path(rule: Rule) -> tuple[str, list[dict[str, Any]]]:
    """The rule in OpenAPI form (``/users/{user_id}``) and its typed path parameters."""
    path, parameters = [], []
    for part in RULE_PART.finditer(rule.rule):
        if part["static"]:
            path.append(part["static"])
            continue
        args, kwargs = parse_converter_args(part["arguments"] or "")
        converter = part["converter"] or "default"
        path.append("{" + part["variable"] + "}")
        parameters.append(
            {
                "name": part["variable"],
                "in": "path",
                "required": True,
                "schema": converter_schema(converter, args, kwargs),
            }
        )
    return "".join(path), parameters


def converter_schema(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of what a Werkzeug converter matches."""
    if name == "int":
        schema: dict[str, Any] = {"type": "integer"}
    elif name == "float":
        schema = {"type": "number"}
    elif name == "uuid":
        return {"type": "string", "format": "uuid"}
    elif name == "any":
        return {"type": "string", "enum": [str(item) for item in args]}
    elif name == "path":
        return {"type": "string", "description": "May contain slashes."}
    else:  # default, string, and converters of the app's own
        schema = {"type": "string", "minLength": int(kwargs.get("minlength", 1))}
        if kwargs.get("maxlength") is not None:
            schema["maxLength"] = int(kwargs["maxlength"])
        if kwargs.get("length") is not None:
            schema["minLength"] = schema["maxLength"] = int(kwargs["length"])
        return schema
    if not kwargs.get("signed", False):
        schema["minimum"] = 0
    for key, bound in (("min", "minimum"), ("max", "maximum")):
        if kwargs.get(key) is not None:
            schema[bound] = kwargs[key]
    return schema
