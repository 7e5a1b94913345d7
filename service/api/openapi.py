"""The OpenAPI document made true about errors and headers, whatever each route declares.

FastAPI documents a 422 with its own `HTTPValidationError` body on every operation that has a parameter,
but ktune answers every error with `ErrorBody` ({"error": {code, message, fields}}), and a 422 only where a
parameter can fail validation; and Pydantic leaves some constraints under its own names (`ge`, `lt`), which
are not JSON Schema. What every route may answer (the job store unreachable) and the headers
every answer of a kind carries are documented here once, so no route has to repeat them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from service.api.schemas import ErrorBody

_COMPONENTS = "#/components/schemas/"
_ERROR_BODY = {"$ref": f"{_COMPONENTS}ErrorBody"}
_FASTAPI_422 = {"$ref": f"{_COMPONENTS}HTTPValidationError"}
_FASTAPI_ONLY = ("HTTPValidationError", "ValidationError")

_INVALID_PARAMETER = {
    "description": "a parameter is invalid (`invalid_request`); `fields` names each problem",
    "content": {"application/json": {"schema": _ERROR_BODY}},
}
# Every /v1 route reads or writes the job store; the global handler turns its failure into this 503.
_STORE_DOWN = {
    "description": "the job store is unreachable (`unavailable`); try again shortly",
    "content": {"application/json": {"schema": _ERROR_BODY}},
}
_LOCATION = {
    "description": "the path of the resource created",
    "required": True,
    "schema": {"type": "string"},
}
_RETRY_AFTER = {
    "description": "seconds after which the same request may succeed, where the service knows",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Pydantic writes a constraint under its own name (`ge`, `lt`, ...) instead of JSON Schema's where it
# follows a validator inside a union: `Int | None = Field(None, ge=1)`, as service.core.params' Int and
# Float carry a BeforeValidator. These are JSON Schema's words for them.
_CONSTRAINT_KEYWORDS = {
    "ge": "minimum",
    "gt": "exclusiveMinimum",
    "le": "maximum",
    "lt": "exclusiveMaximum",
    "multiple_of": "multipleOf",
    "min_length": "minLength",
    "max_length": "maxLength",
}
# Keys whose values are data or names, not schemas: never rewritten.
_NOT_SCHEMAS = frozenset({"properties", "example", "examples", "default", "enum", "const", "value"})


def document_answers(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite `schema` (FastAPI's document) in place so its error answers are the ones clients get and its
    schemas are JSON Schema."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    _add_error_body(components)
    _use_json_schema_keywords(schema)
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            if (operation := item.get(method)) is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            _replace_fastapi_422(operation, responses)
            if path.startswith("/v1/"):
                responses.setdefault("503", copy.deepcopy(_STORE_DOWN))
            _document_headers(responses)
    if _FASTAPI_422["$ref"] not in json.dumps(schema["paths"]):
        for name in _FASTAPI_ONLY:
            components.pop(name, None)
    return schema


def _use_json_schema_keywords(node: Any) -> None:
    """Rename Pydantic's constraint names (`_CONSTRAINT_KEYWORDS`) to JSON Schema's, in place."""
    if isinstance(node, list):
        for item in node:
            _use_json_schema_keywords(item)
    elif isinstance(node, dict):
        for name, keyword in _CONSTRAINT_KEYWORDS.items():
            if name in node and keyword not in node and "type" in node:
                node[keyword] = node.pop(name)
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for definition in value.values():
                    _use_json_schema_keywords(definition)
            elif key not in _NOT_SCHEMAS:
                _use_json_schema_keywords(value)


def _add_error_body(components: dict[str, Any]) -> None:
    body = ErrorBody.model_json_schema(ref_template=_COMPONENTS + "{model}")
    for name, definition in body.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components.setdefault("ErrorBody", body)


def _json_schema(response: dict[str, Any]) -> Any:
    return response.get("content", {}).get("application/json", {}).get("schema")


def _replace_fastapi_422(operation: dict[str, Any], responses: dict[str, Any]) -> None:
    """FastAPI's 422 becomes ErrorBody's where a parameter can be invalid, and goes where none can."""
    if _json_schema(responses.get("422", {})) != _FASTAPI_422:
        return
    if "requestBody" in operation or any(_can_be_invalid(p) for p in operation.get("parameters", [])):
        responses["422"] = copy.deepcopy(_INVALID_PARAMETER)
    else:
        del responses["422"]


def _can_be_invalid(parameter: dict[str, Any]) -> bool:
    """Whether a request can carry this parameter with a value its schema refuses, or leave it out.

    Only a plain string is known to take any value; where unsure, the 422 stays documented.
    """
    if parameter.get("in") != "path" and parameter.get("required"):
        return True
    # Any text is a valid value of a plain string: a `{job_id}` that is no job's is the route's 404.
    schema = {k: v for k, v in parameter.get("schema", {}).items() if k not in ("title", "description")}
    return schema != {"type": "string"}


def _document_headers(responses: dict[str, Any]) -> None:
    for status, response in responses.items():
        if status in ("201", "202"):
            response.setdefault("headers", {}).setdefault("Location", dict(_LOCATION))
        elif status in ("429", "503") and _json_schema(response) == _ERROR_BODY:
            response.setdefault("headers", {}).setdefault("Retry-After", copy.deepcopy(_RETRY_AFTER))
