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

from service.core.errors import FieldProblem, InvalidRequest, KtuneError
from service.core.params import PARAM_TAGS
from service.core.spec import SpecError

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
}


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
    parts = [str(part) for part in loc if part not in PARAM_TAGS]
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


def validation_problems(errors: list[dict[str, Any]]) -> list[FieldProblem]:
    """Pydantic's errors as field paths and sentences, one per field, in order."""
    seen: dict[str, FieldProblem] = {}
    for error in errors:
        problem = _problem(error)
        seen.setdefault(f"{problem.field}\0{problem.message}", problem)
    return list(seen.values())


def install(app: FastAPI) -> None:
    """Register the handlers; anything unexpected becomes a logged 500 with no internals shown."""

    @app.exception_handler(KtuneError)
    async def _ktune(_: Request, exc: KtuneError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message, exc.fields, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = InvalidRequest(validation_problems(list(exc.errors())))
        return error_response(422, err.code, err.message, err.fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(redis.RedisError)
    async def _store_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("job store unreachable: %s", exc)
        return error_response(503, "unavailable", "the job store is unreachable; try again shortly")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "an internal error occurred; it has been logged")
