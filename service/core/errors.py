"""Domain errors that carry their HTTP status; one handler in the API renders them all."""

from __future__ import annotations

from dataclasses import dataclass, field

# An error body quotes at most this much of a value a client sent (a 10 MB name must not come back
# twice over), and holds at most this many field problems; the message of each is capped too.
QUOTE_CHARS = 100
FIELD_CHARS = 200
MESSAGE_CHARS = 500
MAX_FIELD_PROBLEMS = 50


def shorten(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text`, or its first `limit` characters and an ellipsis: how error messages quote client values."""
    return text if len(text) <= limit else f"{text[:limit]}..."


@dataclass
class FieldProblem:
    """One offending field: its dotted path and why, in words a user understands (both length-capped)."""

    field: str
    message: str

    def __post_init__(self) -> None:
        self.field = shorten(self.field, FIELD_CHARS)
        self.message = shorten(self.message, MESSAGE_CHARS)


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


class Unauthorized(KtuneError):
    """No API key, or one that is unknown or revoked; the header tells the client how to authenticate."""

    def __init__(self, message: str, code: str = "unauthorized") -> None:
        super().__init__(message, code, 401, headers={"WWW-Authenticate": "Bearer"})


class NotFound(KtuneError):
    def __init__(self, message: str, code: str = "not_found") -> None:
        super().__init__(message, code, 404)


class Conflict(KtuneError):
    def __init__(self, message: str, code: str = "conflict") -> None:
        super().__init__(message, code, 409)


class InvalidRequest(KtuneError):
    def __init__(self, fields: list[FieldProblem], code: str = "invalid_request", unlisted: int = 0) -> None:
        """`unlisted`: problems found beyond `fields` that the caller did not even describe."""
        shown = fields[:MAX_FIELD_PROBLEMS]
        summary = "; ".join(f"{p.field}: {p.message}" for p in shown)
        more = len(fields) - len(shown) + unlisted
        if more:
            summary += f"; and {more} more problems not listed"
        super().__init__(f"The request is invalid: {summary}", code, 422, shown)


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


class QuotaExceeded(KtuneError):
    """A tenant's quota (`service.core.quotas`) does not admit the request: 429, naming the quota and its
    numbers in the message and as the field `quota.<name>`; Retry-After when waiting helps."""

    def __init__(self, quota: str, used: int, limit: int, message: str, retry_after: int | None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        problem = FieldProblem(f"quota.{quota}", f"{used} in use of {limit}")
        super().__init__(message, "quota_exceeded", 429, [problem], headers)
        self.quota = quota
        self.used = used
        self.limit = limit


class RateLimited(KtuneError):
    """The caller has used up a rate limit of its own; the same request succeeds after Retry-After."""

    def __init__(self, message: str, retry_after_seconds: int, code: str = "rate_limited") -> None:
        super().__init__(message, code, 429, headers={"Retry-After": str(retry_after_seconds)})
