"""Idempotent submits: a retry with the same `Idempotency-Key` gets what the first request created.

As the IETF draft "The Idempotency-Key HTTP Header Field" has it: a key is a client's name for one request;
the same key with another body is a 422, and a request that arrives while the first with its key is still
being handled is a 409 (with Retry-After). Keys belong to the caller's tenant and expire
`KTUNE_IDEMPOTENCY_SECONDS` after the request that used them first succeeded.

Only a success is remembered: a request that failed (a 503 because the queue was unreachable, a 422 from
the data set) gives its key up, so its retry runs afresh and gets a working job, not the failed one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import redis
from fastapi import Depends, Header

from service.api.schemas import ErrorBody, JobPublic
from service.core.errors import Conflict, FieldProblem, InvalidRequest, shorten
from service.core.idempotency import Claim, IdempotencyStore

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"  # "true" on the answer to a retry
MAX_KEY_CHARS = 255
# How long a request holds its key while it runs. A submit takes milliseconds (seconds when Redis is slow);
# if the process handling it dies, its retries get 409s until then.
PENDING_SECONDS = 120.0
RETRY_AFTER_SECONDS = 1

_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_CHARS}}}")

T = TypeVar("T")


def check_key(value: str) -> str:
    """`value` if it is a valid key: 1 to 255 printable ASCII characters. Raises InvalidRequest naming it."""
    if _KEY.fullmatch(value):
        return value
    if not value:
        why = "is empty"
    elif len(value) > MAX_KEY_CHARS:
        why = f"is {len(value)} characters long"
    else:
        bad = next(c for c in value if not " " <= c <= "~")
        why = f"holds {bad!r} at position {value.index(bad)}"
    problem = FieldProblem(
        HEADER, f"{why}: a key is 1 to {MAX_KEY_CHARS} printable ASCII characters, such as a UUID"
    )
    raise InvalidRequest([problem], "invalid_idempotency_key")


async def idempotency_key(
    value: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="your name for this request (1 to 255 printable ASCII characters, such as a UUID): "
            "a retry with the same key and body within 24 h (KTUNE_IDEMPOTENCY_SECONDS) gets the job the "
            "first one created (200, header `Idempotent-Replayed: true`) instead of a second job",
        ),
    ] = None,
) -> str | None:
    """The request's Idempotency-Key, if any; raises InvalidRequest for one that is not a valid key."""
    return None if value is None else check_key(value)


IdempotencyKeyDep = Annotated[str | None, Depends(idempotency_key)]

# POST /v1/jobs's answers beyond its own.
OPENAPI_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": JobPublic,
        "description": "a retry of an earlier submit (same Idempotency-Key, same body): the job that submit "
        "created, as it is now; nothing new is queued",
        "headers": {REPLAYED_HEADER: {"description": "`true`", "schema": {"type": "string"}}},
    },
    409: {
        "model": ErrorBody,
        "description": "a request with this Idempotency-Key is still being submitted "
        "(`idempotency_in_progress`, with Retry-After), or the job it created has been deleted since "
        "(`idempotency_original_deleted`)",
    },
}


@dataclass(frozen=True)
class Keyed:
    """A request with an Idempotency-Key: the caller's tenant, what kind of request it is (`scope`, such as
    `jobs`; `noun` names what it creates in messages) and what it asks for (`fingerprint`)."""

    store: IdempotencyStore
    scope: str
    noun: str
    tenant: str
    key: str
    fingerprint: str
    seconds: float

    def run(
        self, create: Callable[[], T], id_of: Callable[[T], str], current: Callable[[str], T | None]
    ) -> tuple[T, bool]:
        """`create()` once per key, and whether the answer is a replay: what an earlier request with the key
        created (`current(id)`, as it is now).

        Raises InvalidRequest (the key was used with another body) or Conflict (a request with the key is
        under way, or what it created is gone), and whatever `create` raises (the key is given up then).
        """
        held = self.store.claim(self.scope, self.tenant, self.key, self.fingerprint, PENDING_SECONDS)
        if not isinstance(held, Claim):
            if held.fingerprint != self.fingerprint:
                raise self._reused()
            if held.resource_id is None:
                raise self._in_progress()
            now = current(held.resource_id)
            if now is None:
                raise self._gone(held.resource_id)
            return now, True
        try:
            created = create()
        except BaseException:
            self._give_up(held)
            raise
        try:
            if not self.store.complete(held, id_of(created), self.seconds):
                log.warning(
                    "%s %s: its idempotency key lapsed and was taken before it could be recorded",
                    self.noun,
                    id_of(created),
                )
        except redis.RedisError:
            # Created all the same: the client gets it; only a retry after the claim lapses may make another.
            log.exception("could not record the idempotency key of %s %s", self.noun, id_of(created))
        return created, False

    def _give_up(self, claim: Claim) -> None:
        try:
            self.store.release(claim)
        except redis.RedisError:
            log.warning("could not give up an idempotency key; it frees itself in %g s", PENDING_SECONDS)

    def _reused(self) -> InvalidRequest:
        problem = FieldProblem(
            HEADER,
            f"was used with another body (key {shorten(self.key, 40)!r}); this body differs from the first "
            f"request's: send it with a new key, or the first body again to get its {self.noun}",
        )
        return InvalidRequest([problem], "idempotency_key_reused")

    def _gone(self, resource_id: str) -> Conflict:
        return Conflict(
            f"the {self.noun} that this {HEADER} created ({resource_id}) has been deleted since; send the "
            "request with a new key to create another",
            "idempotency_original_deleted",
        )

    def _in_progress(self) -> Conflict:
        error = Conflict(
            f"a request with this {HEADER} is still being handled; try again in a moment to get its "
            f"{self.noun}",
            "idempotency_in_progress",
        )
        error.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return error
