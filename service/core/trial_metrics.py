"""Trial counters and the trial-duration histogram, kept in Redis so every worker adds to one set.

Workers run in other processes (and machines) than the API, so in-process Prometheus counters could not
count their trials: `lifecycle` records each trial that starts or ends here, once per status change the
store made, and every API replica's /metrics reads the same hash (`{p}:metrics:trials`, named from the
job store's prefix). Fields: `started`, `ended:{status}`, and the histogram's `duration:count`,
`duration:sum` and `duration:le:{bound}` (the trials whose duration fell in that bucket alone; the reader
makes them cumulative, as Prometheus' buckets are).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import redis

from service.core.states import TrialStatus
from service.core.store import JobStore

# Upper bounds of the duration buckets in seconds: trials of tiny jobs take about a second, large ones hours.
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
ENDED = (TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.CANCELLED)

log = logging.getLogger(__name__)


def _key(store: JobStore) -> str:
    return store.keys.metrics_trials


def _bucket(seconds: float) -> str:
    """The field of the first bucket whose bound holds `seconds` (`+Inf` past the last)."""
    bound = next((b for b in DURATION_BUCKETS if seconds <= b), None)
    return f"duration:le:{'+Inf' if bound is None else repr(bound)}"


def record_started(store: JobStore) -> None:
    """A trial started running (a trial taken over from a lost worker starts again)."""
    try:
        store.redis.hincrby(_key(store), "started", 1)
    except redis.RedisError as exc:
        _lost(exc)


def record_ended(store: JobStore, status: TrialStatus, duration_seconds: float | None) -> None:
    """A trial ended with `status` after `duration_seconds` of running (None: it never ran)."""
    pipe = store.redis.pipeline(transaction=False)
    queue_ended(pipe, store, status, duration_seconds)
    try:
        pipe.execute()
    except redis.RedisError as exc:
        _lost(exc)


def queue_started(pipe: Any, store: JobStore) -> None:
    """`record_started`, queued on a pipeline the caller sends (and whose errors it logs with `lost`)."""
    pipe.hincrby(_key(store), "started", 1)


def queue_ended(pipe: Any, store: JobStore, status: TrialStatus, duration_seconds: float | None) -> None:
    """`record_ended`, queued on a pipeline the caller sends (and whose errors it logs with `lost`)."""
    pipe.hincrby(_key(store), f"ended:{status.value}", 1)
    if duration_seconds is not None and duration_seconds >= 0:
        pipe.hincrby(_key(store), _bucket(duration_seconds), 1)
        pipe.hincrby(_key(store), "duration:count", 1)
        pipe.hincrbyfloat(_key(store), "duration:sum", duration_seconds)


def lost(exc: redis.RedisError) -> None:
    """Log counts a pipeline of `queue_started` / `queue_ended` failed to add."""
    _lost(exc)


def _lost(exc: redis.RedisError) -> None:
    # The trial's change of status is stored already: a count missed is better than a caller that takes
    # the stored change for a failed one.
    log.warning("a trial metric was not counted: %s", exc)


@dataclass(frozen=True)
class TrialCounts:
    """What the hash holds, read at once: counters and the histogram's cumulative buckets."""

    started: int = 0
    ended: dict[TrialStatus, int] = field(default_factory=dict)
    # (upper bound, trials that took at most that long), bounds ascending, the last +Inf.
    duration_buckets: list[tuple[float, int]] = field(default_factory=list)
    duration_sum: float = 0.0
    duration_count: int = 0


def read(store: JobStore) -> TrialCounts:
    """Every counter, in one round trip."""
    return parse(store.redis.hgetall(_key(store)))


def parse(fields: dict[str, Any]) -> TrialCounts:
    """The counts of the hash's fields (strings, as Redis returns them)."""
    running = 0
    buckets = []
    for bound in (*DURATION_BUCKETS, float("inf")):
        name = "+Inf" if bound == float("inf") else repr(bound)
        running += int(fields.get(f"duration:le:{name}", 0))
        buckets.append((bound, running))
    return TrialCounts(
        started=int(fields.get("started", 0)),
        ended={status: int(fields.get(f"ended:{status.value}", 0)) for status in ENDED},
        duration_buckets=buckets,
        duration_sum=float(fields.get("duration:sum", 0.0)),
        duration_count=int(fields.get("duration:count", 0)),
    )
