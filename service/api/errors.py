"""One place that turns every error into the documented body: {"error": {code, message, fields}}."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.core.blobs import BlobStoreError
from service.core.errors import (
    MAX_FIELD_PROBLEMS,
    QUOTE_CHARS,
    FieldProblem,
    InvalidRequest,
    KtuneError,
    shorten,
)
from service.core.params import PARAM_TAGS
from service.core.spec import SpecError
from service.core.store import InvalidCursor

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
}

_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def error_response(
    status: int,
    code: str,
    message: str,
    fields: list[FieldProblem] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "message": message,
            "fields": [{"field": p.field, "message": p.message} for p in fields or []],
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _field_path(loc: tuple[Any, ...]) -> str:
    # A field name is the client's own text (an unknown key may be megabytes long): quote a prefix.
    parts = [shorten(str(part), QUOTE_CHARS) for part in loc if part not in PARAM_TAGS]
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path or "body"


def _problem(error: dict[str, Any]) -> FieldProblem:
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SpecError):
        return FieldProblem(cause.field, cause.message)
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    kind = error.get("type")
    if kind == "extra_forbidden":
        message = "is not a field of this section; remove it (check its spelling)"
    elif kind == "missing":
        message = "is required"
    elif kind == "json_invalid":
        # The location holds the character offset of the syntax error, not a field: report it as the body's.
        loc = tuple(error.get("loc", ()))
        detail = str((error.get("ctx") or {}).get("error", "")).strip()
        at = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        message = f"the body is not valid JSON: {detail}{at}" if detail else f"the body is not valid JSON{at}"
        return FieldProblem("body", message)
    return FieldProblem(_field_path(tuple(error.get("loc", ()))), message)


def validation_problems(errors: list[dict[str, Any]], limit: int | None = None) -> list[FieldProblem]:
    """Pydantic's errors as field paths and sentences, one per field, in order; at most `limit` of them."""
    seen: dict[str, FieldProblem] = {}
    for error in errors:
        if limit is not None and len(seen) >= limit:
            break
        problem = _problem(error)
        seen.setdefault(f"{problem.field}\0{problem.message}", problem)
    return list(seen.values())


def invalid_request(errors: list[dict[str, Any]]) -> InvalidRequest:
    """The 422 of Pydantic's errors."""
    # A body of a million bad numbers has a million errors: describe the first few, count the rest.
    problems = validation_problems(errors, MAX_FIELD_PROBLEMS)
    unlisted = len(errors) - len(problems) if len(problems) == MAX_FIELD_PROBLEMS else 0
    return InvalidRequest(problems, unlisted=unlisted)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path.

    Starlette's 405 names only the methods of the first route that matched the path, though GET and
    POST /v1/jobs are two routes; asking every route with each method finds them all.
    """
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def install(app: FastAPI) -> None:
    """Register the handlers; anything unexpected becomes a logged 500 with no internals shown."""

    @app.exception_handler(KtuneError)
    async def _ktune(_: Request, exc: KtuneError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message, exc.fields, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = invalid_request(list(exc.errors()))
        return error_response(422, err.code, err.message, err.fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
        return error_response(
            exc.status_code, _CODES.get(exc.status_code, "error"), str(exc.detail), headers=headers
        )

    @app.exception_handler(InvalidCursor)
    async def _cursor(_: Request, exc: InvalidCursor) -> JSONResponse:
        # Every paginated list: a cursor this store did not hand out.
        problem = FieldProblem(
            "cursor", "is not a cursor this service handed out; use next_cursor from a previous page"
        )
        err = InvalidRequest([problem])
        return error_response(422, err.code, err.message, err.fields)

    @app.exception_handler(redis.RedisError)
    async def _store_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("job store unreachable: %s", exc)
        return error_response(503, "unavailable", "the job store is unreachable; try again shortly")

    @app.exception_handler(BlobStoreError)
    async def _artifacts_down(_: Request, exc: BlobStoreError) -> JSONResponse:
        log.warning("artifact store unreachable: %s", exc)
        return error_response(503, "unavailable", "the artifact store is unreachable; try again shortly")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "an internal error occurred; it has been logged")
