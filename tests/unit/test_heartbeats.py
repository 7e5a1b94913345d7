"""When a worker's heartbeat says it is not consuming, and how /readyz words it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from service.core.heartbeats import WorkerHeartbeat

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def heartbeat(stalled_for: float | None, **fields: Any) -> WorkerHeartbeat:
    values: dict[str, Any] = {
        "queues": ["cpu"],
        "concurrency": 2,
        "busy": 1,
        "waiting": {"cpu": 3},
        "stalled_since": None if stalled_for is None else NOW - timedelta(seconds=stalled_for),
        "updated_at": NOW,
        **fields,
    }
    return WorkerHeartbeat(**values)


def test_a_worker_stalled_past_the_threshold_is_not_consuming() -> None:
    assert heartbeat(45).not_consuming(30) == (
        "queue cpu has had 3 messages waiting for 45 s while 1 of 2 pool processes is idle"
    )


def test_a_short_stall_or_none_is_still_consuming() -> None:
    assert heartbeat(29.5).not_consuming(30) is None
    assert heartbeat(None, waiting={"cpu": 0}, busy=0).not_consuming(30) is None
    assert heartbeat(30).not_consuming(30) is not None, "the threshold itself counts"


def test_the_stall_is_measured_on_the_workers_clock() -> None:
    """From stalled_since to updated_at: a heartbeat read later, or on a skewed clock, reads the same."""
    hour_ago = NOW - timedelta(hours=1)
    read_late = heartbeat(None, stalled_since=hour_ago - timedelta(seconds=10), updated_at=hour_ago)
    assert read_late.stalled_seconds() == 10


def test_the_sentence_names_only_the_queues_with_waiting_messages() -> None:
    one = heartbeat(31, queues=["cpu", "gpu"], waiting={"cpu": 0, "gpu": 1}, concurrency=1, busy=0)
    assert (
        one.not_consuming(30)
        == "queue gpu has had 1 message waiting for 31 s while 1 of 1 pool process is idle"
    )
    both = heartbeat(60, queues=["cpu", "gpu"], waiting={"cpu": 2, "gpu": 1}, busy=0)
    assert both.not_consuming(30) == (
        "queues cpu, gpu have had 3 messages waiting for 60 s while 2 of 2 pool processes are idle"
    )


def test_the_health_check_fails_a_silent_or_stalled_worker_and_passes_a_consuming_one() -> None:
    from worker.health import problem

    assert problem("celery@a", None, 30) is not None and "no heartbeat" in str(problem("celery@a", None, 30))
    assert problem("celery@a", heartbeat(45), 30) == (
        "celery@a is not consuming: queue cpu has had 3 messages waiting for 45 s while 1 of 2 pool "
        "processes is idle"
    )
    assert problem("celery@a", heartbeat(None), 30) is None
