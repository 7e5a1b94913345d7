"""Domain errors that carry their HTTP status; one handler in the API renders them all."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FieldProblem:
    """One offending field: its dotted path and why, in words a user understands."""

    field: str
    message: str


@dataclass
class KtuneError(Exception):
    """Base of every error a client may see."""

    message: str
    code: str = "error"
    status_code: int = 400
    fields: list[FieldProblem] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


class NotFound(KtuneError):
    def __init__(self, message: str, code: str = "not_found") -> None:
        super().__init__(message, code, 404)


class Conflict(KtuneError):
    def __init__(self, message: str, code: str = "conflict") -> None:
        super().__init__(message, code, 409)


class InvalidRequest(KtuneError):
    def __init__(self, fields: list[FieldProblem], code: str = "invalid_request") -> None:
        summary = "; ".join(f"{p.field}: {p.message}" for p in fields)
        super().__init__(f"The request is invalid: {summary}", code, 422, fields)


class Unavailable(KtuneError):
    def __init__(self, message: str, code: str = "unavailable") -> None:
        super().__init__(message, code, 503)


class BadRequest(KtuneError):
    """A body that cannot be read as a request at all (not UTF-8, nested too deep)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message, code, 400)


class UnsupportedMediaType(KtuneError):
    def __init__(self, message: str, code: str = "unsupported_media_type") -> None:
        super().__init__(message, code, 415)


class Busy(KtuneError):
    """The service is at a configured limit of work in progress; the same request may succeed later."""

    def __init__(self, message: str, retry_after_seconds: int, code: str = "busy") -> None:
        super().__init__(message, code, 503, headers={"Retry-After": str(retry_after_seconds)})
