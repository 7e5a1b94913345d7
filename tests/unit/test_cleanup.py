"""Which jobs and files the periodic cleanup removes (service/api/cleanup.py); the removal itself runs
against real Redis and real workers in tests/integration/test_retention.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.api.cleanup import (
    CleanupReport,
    is_expired,
    orphan_due,
    retention_cutoff,
    scratch_due,
    scratch_grace,
)
from service.core.settings import Settings
from service.core.states import JobStatus

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)


def test_retention_cutoff_is_the_retention_before_now() -> None:
    assert retention_cutoff(NOW, 30) == NOW - timedelta(days=30)
    assert retention_cutoff(NOW, 0.5) == NOW - timedelta(hours=12), "fractions of a day count"


def test_zero_retention_keeps_jobs_forever() -> None:
    assert retention_cutoff(NOW, 0) is None
    assert not is_expired(NOW - timedelta(days=10_000), None)


def test_a_job_expires_once_it_ended_before_the_cutoff() -> None:
    cutoff = retention_cutoff(NOW, 30)
    assert is_expired(NOW - timedelta(days=30, seconds=1), cutoff)
    assert not is_expired(NOW - timedelta(days=29, hours=23), cutoff)
    assert not is_expired(cutoff, cutoff), "exactly at the cutoff is not yet past it"


def test_a_job_that_has_not_ended_never_expires() -> None:
    assert not is_expired(None, retention_cutoff(NOW, 30))


def test_retention_days_setting_defaults_to_thirty_and_refuses_negative_values() -> None:
    assert Settings().job_retention_days == 30
    assert Settings(job_retention_days=0.25).job_retention_days == 0.25
    with pytest.raises(ValueError, match="job_retention_days"):
        Settings(job_retention_days=-1)


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_scratch_of_an_ended_job_goes_after_the_grace(status: JobStatus) -> None:
    assert scratch_due(status, NOW - GRACE, NOW, GRACE)
    assert not scratch_due(status, NOW - GRACE + timedelta(seconds=1), NOW, GRACE), (
        "a trial stopping at the cancel may still write a checkpoint"
    )


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, None])
def test_scratch_of_a_job_still_going_or_unknown_stays(status: JobStatus | None) -> None:
    assert not scratch_due(status, NOW - timedelta(days=1), NOW, GRACE)


def test_scratch_of_an_ended_job_without_an_end_time_stays() -> None:
    assert not scratch_due(JobStatus.SUCCEEDED, None, NOW, GRACE)


def test_scratch_grace_covers_a_lease() -> None:
    settings = Settings(lease_seconds=30)
    assert scratch_grace(settings) >= timedelta(seconds=settings.lease_seconds)


def test_a_directory_whose_job_is_gone_is_an_orphan_after_the_grace() -> None:
    old = (NOW - GRACE).timestamp()
    assert orphan_due(None, old, NOW, GRACE)
    assert not orphan_due(None, NOW.timestamp() - 1, NOW, GRACE), "a worker may be writing into it now"
    assert not orphan_due(None, None, NOW, GRACE), "the directory is already gone"


@pytest.mark.parametrize("status", list(JobStatus))
def test_a_directory_of_a_known_job_is_never_an_orphan(status: JobStatus) -> None:
    assert not orphan_due(status, (NOW - timedelta(days=100)).timestamp(), NOW, GRACE)


def test_an_empty_report_is_false() -> None:
    assert not CleanupReport()
    assert CleanupReport(expired=["a"])
    assert CleanupReport(leftover_keys=["ktune:job:a:trials"])
