"""The 429s of quotas, checked without Redis: their bodies name the quota and its numbers."""

from __future__ import annotations

import pytest

from service.api.admission import QUEUED_RETRY_SECONDS, check_storage, job_admission, refused
from service.core.errors import QuotaExceeded
from service.core.quotas import Quotas
from service.core.store import JobStore, OverQuota


class _Usage:
    """The store's reads of a tenant's stored bytes."""

    def __init__(self, used: int) -> None:
        self.used = used

    def usage(self, tenant: str) -> int:
        return self.used


def test_a_full_queue_is_a_429_to_retry_soon() -> None:
    error = refused(OverQuota("queued_jobs", 5), Quotas(queued_jobs=5), "acme", 3)
    assert (error.status_code, error.code) == (429, "quota_exceeded")
    assert error.fields[0].field == "quota.queued_jobs" and "5 in use of 5" in error.fields[0].message
    assert error.headers["Retry-After"] == str(QUEUED_RETRY_SECONDS)
    assert "acme" in error.message and "queued_jobs" in error.message


def test_a_days_trials_used_up_is_a_429_until_midnight() -> None:
    error = refused(OverQuota("trials_per_day", 95), Quotas(trials_per_day=100), "acme", 10)
    assert error.fields[0].field == "quota.trials_per_day"
    assert "reserves 10 trials" in error.message and "95 of its 100" in error.message
    assert 0 < int(error.headers["Retry-After"]) <= 24 * 3600 + 1


def test_a_job_larger_than_a_days_trials_is_refused_with_no_retry() -> None:
    store: JobStore = _Usage(0)  # type: ignore[assignment]
    with pytest.raises(QuotaExceeded) as error:
        job_admission(store, Quotas(trials_per_day=5), "acme", 6)
    assert error.value.quota == "trials_per_day" and "Retry-After" not in error.value.headers


def test_stored_bytes_at_the_quota_refuse_more_until_something_is_deleted() -> None:
    quotas = Quotas(artifact_bytes=1000)
    check_storage(_Usage(999), quotas, "acme")  # type: ignore[arg-type]
    with pytest.raises(QuotaExceeded) as error:
        check_storage(_Usage(1000), quotas, "acme")  # type: ignore[arg-type]
    assert error.value.fields[0].message == "1000 in use of 1000" and "delete" in error.value.message
    admitted = job_admission(_Usage(0), quotas, "acme", 4)  # type: ignore[arg-type]
    assert (admitted.trials, admitted.max_queued, admitted.max_trials_per_day) == (4, 100, 20_000)
