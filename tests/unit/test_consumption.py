"""When a worker node counts as starved while idle: messages wait for it while a pool process is free."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.consumption import next_stalled_since

T0 = datetime(2025, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(seconds=40)


def test_messages_waiting_while_a_process_is_free_start_a_stall() -> None:
    assert next_stalled_since(None, T0, waiting=3, busy=1, concurrency=2) == T0


def test_a_stall_keeps_the_time_it_began() -> None:
    assert next_stalled_since(T0, LATER, waiting=1, busy=0, concurrency=1) == T0


@pytest.mark.parametrize(
    ("waiting", "busy", "concurrency"),
    [
        (0, 0, 2),  # idle with nothing to do
        (2, 1, 1),  # every process busy: the messages wait their turn
        (5, 2, 2),
        (1, 3, 2),  # holding more than it runs (prefetched) is no stall either
    ],
)
def test_no_stall_without_both_waiting_messages_and_a_free_process(
    waiting: int, busy: int, concurrency: int
) -> None:
    assert next_stalled_since(None, T0, waiting, busy, concurrency) is None
    assert next_stalled_since(T0, LATER, waiting, busy, concurrency) is None, "an ongoing stall ends"
