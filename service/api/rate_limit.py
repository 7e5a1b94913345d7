"""A per-caller limit on job creation (KTUNE_JOB_RATE_LIMIT), counted in Redis so API replicas share it.

Every POST /v1/jobs counts, accepted or not: the limit also bounds the body parsing a caller can make the API
do. The windows are moving (the `limits` package's moving-window strategy): no burst of twice the limit
across the edge of a fixed window. POST /v1/jobs/validate (a dry run) is limited by the same numbers in
windows of its own: it parses bodies too, but a dry run does not use up a caller's job creations.
"""

from __future__ import annotations

import logging
import math
import time

import redis
from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from service.api.auth import CallerDep
from service.core.errors import RateLimited
from service.core.settings import Settings

log = logging.getLogger(__name__)


class JobRateLimit:
    """The job-creation limits of one API process (none when KTUNE_JOB_RATE_LIMIT is off)."""

    def __init__(self, settings: Settings, key_prefix: str) -> None:
        spec = settings.job_rate_limit
        self.items: list[RateLimitItem] = parse_many(spec) if spec else []
        # Its own small client (the `limits` package makes it from the URL, password included): a Redis that
        # hangs fails a hit within seconds rather than holding the request.
        storage = RedisStorage(
            settings.redis_url, key_prefix=key_prefix, socket_connect_timeout=5, socket_timeout=5
        )
        self._limiter = MovingWindowRateLimiter(storage)

    def hit(self, caller: str, scope: str = "jobs") -> None:
        """Count one job creation (`scope` "jobs") or dry run ("validations") by `caller`; raises
        RateLimited (429, Retry-After) over a limit. Each scope has its own windows.

        Redis errors are not raised: see `limit_job_creation`.
        """
        for item in self.items:
            if not self._limiter.hit(item, scope, caller):
                reset_time, _ = self._limiter.get_window_stats(item, scope, caller)
                wait = max(1, math.ceil(reset_time - time.time()))
                raise RateLimited(
                    f"too many {_NOUNS[scope]}: at most {item.amount} per {_window(item)} for each API key "
                    f"(KTUNE_JOB_RATE_LIMIT); try again in {wait} s",
                    wait,
                )


_NOUNS = {"jobs": "jobs", "validations": "job validations"}


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


def limit_job_creation(request: Request, caller: CallerDep) -> None:
    """FastAPI dependency of POST /v1/jobs: 429 once the caller's API key (its tenant with auth off) is over
    KTUNE_JOB_RATE_LIMIT."""
    _limit(request, caller, "jobs")


def limit_job_validation(request: Request, caller: CallerDep) -> None:
    """FastAPI dependency of POST /v1/jobs/validate: KTUNE_JOB_RATE_LIMIT again, counted apart from job
    creation, so dry runs neither use up a caller's jobs nor parse bodies without a bound."""
    _limit(request, caller, "validations")


def _limit(request: Request, caller: CallerDep, scope: str) -> None:
    limit: JobRateLimit = request.app.state.job_rate_limit
    if not limit.items:
        return
    identity = f"key:{caller.key_id}" if caller.key_id is not None else f"tenant:{caller.tenant}"
    try:
        limit.hit(identity, scope)
    except (redis.RedisError, StorageError) as exc:
        # Fails open: a Redis the limiter cannot reach cannot store the job either, so the request ends
        # in the store's 503 anyway; a 503 here would only hide the body's validation errors.
        log.warning("job rate limit not applied, Redis failed: %s", exc)
