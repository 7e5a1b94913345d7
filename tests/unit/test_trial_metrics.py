"""The trial-duration histogram as kept in Redis: each trial in one bucket, read back cumulative."""

from __future__ import annotations

import math

import pytest

from service.core import trial_metrics
from service.core.states import TrialStatus
from service.core.store import JobStore


@pytest.mark.parametrize(
    ("seconds", "field"),
    [(0.0, "1.0"), (1.0, "1.0"), (1.01, "2.5"), (59.9, "60.0"), (7200.0, "7200.0"), (7200.5, "+Inf")],
)
def test_a_duration_falls_in_the_first_bucket_that_holds_it(seconds: float, field: str) -> None:
    assert trial_metrics._bucket(seconds) == f"duration:le:{field}"


def test_buckets_are_read_back_cumulative_and_end_at_the_count() -> None:
    fields = {
        "started": "5",
        "ended:completed": "3",
        "ended:failed": "1",
        trial_metrics._bucket(0.5): "1",
        trial_metrics._bucket(20): "2",
        trial_metrics._bucket(10_000): "1",
        "duration:count": "4",
        "duration:sum": "10540.5",
    }
    counts = trial_metrics.parse(fields)
    assert counts.started == 5
    assert counts.ended == {TrialStatus.COMPLETED: 3, TrialStatus.FAILED: 1, TrialStatus.CANCELLED: 0}
    buckets = dict(counts.duration_buckets)
    assert (buckets[1.0], buckets[10.0], buckets[30.0], buckets[7200.0], buckets[math.inf]) == (1, 1, 3, 3, 4)
    assert [bound for bound, _ in counts.duration_buckets] == sorted(buckets)
    assert (counts.duration_count, counts.duration_sum) == (4, 10540.5)


def test_an_empty_hash_reads_as_zeros() -> None:
    counts = trial_metrics.parse({})
    assert counts.started == 0 and counts.duration_count == 0
    assert all(count == 0 for _, count in counts.duration_buckets)
    assert len(counts.duration_buckets) == len(trial_metrics.DURATION_BUCKETS) + 1


def test_a_store_that_cannot_be_reached_loses_the_count_not_the_trial() -> None:
    store = JobStore.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    trial_metrics.record_started(store)
    trial_metrics.record_ended(store, TrialStatus.COMPLETED, 1.5)
