"""The store's tenant records (`service.core.store_tenants`), against a real Redis server: quota admission,
the day's trial reservations, jobs ahead in fair share, and artifact bytes. A fresh key prefix per test."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.core.records import utcnow
from service.core.states import JobStatus
from service.core.store import Admission, JobStore, OverQuota
from tests.integration.store_records import job_record, keys_under, stored_job, trial_record

pytestmark = pytest.mark.integration

MISSING = "00000000-0000-4000-8000-000000000000"


def today() -> str:
    return utcnow().strftime("%Y-%m-%d")


def test_a_job_over_the_queued_quota_stores_nothing(scratch_store: JobStore) -> None:
    admission = Admission(trials=1, max_queued=1)
    scratch_store.create_job(job_record("acme"), b"x", admission)
    before = keys_under(scratch_store)
    refused = job_record("acme")
    with pytest.raises(OverQuota) as raised:
        scratch_store.create_job(refused, b"x", admission)
    assert (raised.value.quota, raised.value.used) == ("queued_jobs", 1)
    assert keys_under(scratch_store) == before, "not its record, data, index entries nor trials"
    assert scratch_store.trials_reserved("acme", today()) == 1


def test_a_job_over_the_days_trials_stores_nothing_and_one_that_fits_exactly_is_admitted(
    scratch_store: JobStore,
) -> None:
    scratch_store.create_job(job_record("acme"), b"x", Admission(trials=4, max_trials_per_day=10))
    with pytest.raises(OverQuota) as raised:
        scratch_store.create_job(job_record("acme"), b"x", Admission(trials=7, max_trials_per_day=10))
    assert (raised.value.quota, raised.value.used) == ("trials_per_day", 4)
    scratch_store.create_job(job_record("acme"), b"x", Admission(trials=6, max_trials_per_day=10))
    assert scratch_store.trials_reserved("acme", today()) == 10
    assert scratch_store.tenant_job_counts("acme") == {JobStatus.QUEUED: 2, JobStatus.RUNNING: 0}


def test_without_limits_trials_are_still_reserved(scratch_store: JobStore) -> None:
    scratch_store.create_job(job_record("acme"), b"x", Admission(trials=5))
    scratch_store.create_job(job_record("acme"), b"x")  # no admission: reserves nothing
    assert scratch_store.trials_reserved("acme", today()) == 5
    assert scratch_store.trials_reserved("globex", today()) == 0
    yesterday = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%d")
    assert scratch_store.trials_reserved("acme", yesterday) == 0


def test_a_day_count_is_kept_three_days(scratch_store: JobStore) -> None:
    scratch_store.create_job(job_record("acme"), b"x", Admission(trials=1))
    ttl = scratch_store.redis.ttl(scratch_store.keys.tenant_trials("acme", today()))
    assert 3 * 24 * 3600 - 60 < ttl <= 3 * 24 * 3600


def test_trials_never_created_are_given_back_once(scratch_store: JobStore) -> None:
    record = job_record("acme", trials=5)
    scratch_store.create_job(record, b"x", Admission(trials=5))
    for trial_id in ("00", "01"):
        assert scratch_store.transition_trial(record.id, trial_record(trial_id), [None])
    assert scratch_store.release_trials(record.id) == 3
    assert scratch_store.trials_reserved("acme", today()) == 2
    assert scratch_store.release_trials(record.id) == 0
    assert scratch_store.trials_reserved("acme", today()) == 2
    assert scratch_store.release_trials(MISSING) == 0


def test_a_give_back_never_takes_the_day_below_zero(scratch_store: JobStore) -> None:
    record = job_record("acme", trials=5)
    scratch_store.create_job(record, b"x", Admission(trials=5))
    scratch_store.redis.set(scratch_store.keys.tenant_trials("acme", today()), 2, keepttl=True)
    assert scratch_store.release_trials(record.id) == 5
    assert scratch_store.trials_reserved("acme", today()) == 0


def test_tenant_job_counts_count_only_the_tenants_queued_and_running_jobs(scratch_store: JobStore) -> None:
    assert scratch_store.tenant_job_counts("acme") == {JobStatus.QUEUED: 0, JobStatus.RUNNING: 0}
    stored_job(scratch_store, "acme")
    running, ended = stored_job(scratch_store, "acme"), stored_job(scratch_store, "acme")
    stored_job(scratch_store, "globex")
    scratch_store.start(running, None)
    scratch_store.transition(ended, [JobStatus.QUEUED], JobStatus.CANCELLED)
    assert scratch_store.tenant_job_counts("acme") == {JobStatus.QUEUED: 1, JobStatus.RUNNING: 1}


def test_oldest_jobs_are_the_tenants_first_created_with_a_status(scratch_store: JobStore) -> None:
    now = utcnow()
    records = [job_record("acme", created_at=now - timedelta(seconds=5 - i)) for i in range(4)]
    for record in reversed(records):
        scratch_store.create_job(record, b"x")
    scratch_store.create_job(job_record("globex", created_at=now - timedelta(hours=1)), b"x")
    scratch_store.start(records[0].id, None)
    assert scratch_store.oldest_jobs("acme", JobStatus.QUEUED, 2) == [records[1].id, records[2].id]
    assert scratch_store.oldest_jobs("acme", JobStatus.RUNNING, 5) == [records[0].id]
    assert scratch_store.oldest_jobs("acme", JobStatus.FAILED, 5) == []


def test_jobs_ahead_are_the_tenants_running_jobs_and_those_queued_before(scratch_store: JobStore) -> None:
    now = utcnow()
    records = [job_record("acme", created_at=now - timedelta(seconds=5 - i)) for i in range(3)]
    for record in records:
        scratch_store.create_job(record, b"x")
    scratch_store.create_job(job_record("globex", created_at=now - timedelta(hours=1)), b"x")
    assert [scratch_store.jobs_ahead("acme", r.id) for r in records] == [0, 1, 2]
    scratch_store.start(records[2].id, None)
    assert [scratch_store.jobs_ahead("acme", r.id) for r in records] == [1, 2, 2]


def test_usage_sums_the_latest_bytes_of_each_existing_job(scratch_store: JobStore) -> None:
    assert scratch_store.usage("acme") == 0
    first, second = stored_job(scratch_store, "acme"), stored_job(scratch_store, "acme")
    other = stored_job(scratch_store, "globex")
    scratch_store.set_job_usage(first, 100)
    scratch_store.set_job_usage(first, 150)  # replaces, not adds
    scratch_store.set_job_usage(second, 50)
    scratch_store.set_job_usage(other, 7)
    scratch_store.set_job_usage(MISSING, 1000)
    assert scratch_store.usage("acme") == 200
    assert scratch_store.usage("globex") == 7
