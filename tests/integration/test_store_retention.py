"""Deleting jobs from the store (`service.core.store_retention`), against a real Redis server: a deleted job
leaves no key, a refused delete changes nothing, leftovers of deleted jobs go, and retention finds the
finished jobs created before a time. A fresh key prefix per test."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.core.records import ExecutionRecord, utcnow
from service.core.states import JobStatus, TrialStatus
from service.core.store import Admission, JobDeletion, JobStore, history_entries
from service.core.store_keys import JobPart, TrialPart
from service.core.store_trials import HandIn
from tests.integration.store_records import job_record, keys_under, stored_job, trial_record

pytestmark = pytest.mark.integration

MISSING = "00000000-0000-4000-8000-000000000000"


def every_key_of(store: JobStore, tenant: str) -> str:
    """A cancelled job of `tenant` with a key of every part of the layout, each written by the store's own
    operations; all but a lease, which stops a delete while it is held."""
    record = job_record(tenant, trials=3)
    store.create_job(record, b"npz bytes", Admission(trials=3))
    job_id = record.id
    store.set_job_usage(job_id, 1234)
    for trial_id in ("00", "01"):
        assert store.transition_trial(job_id, trial_record(trial_id), [None])
    running = trial_record("01", TrialStatus.RUNNING, epochs=2)
    assert store.transition_trial(job_id, running, [TrialStatus.QUEUED], replace_history=True)
    assert store.append_history(job_id, "01", history_entries([ExecutionRecord(history={"loss": [0.1]})]))
    assert store.acquire_step_lock(job_id, "earlier", 30)
    store.release_step_lock(job_id, "earlier")  # leaves its wake token
    assert store.acquire_step_lock(job_id, "worker", 30)  # still held when the job is deleted
    assert store.append_search_log(job_id, {"state": {}}, "worker", 0)
    # A result handed in while the step lock is held waits for the next step; another's was taken in.
    assert store.hand_in_result(job_id, "00", "{}", "another worker", 30) is HandIn.BUSY
    store.results_taken_in(job_id, ["01"], ["01"])  # leaves 01's worker its token
    store.redis.set(store.keys.legacy_oracle(job_id), "{}")  # as a job from before the search log
    assert store.acquire_lease(job_id, "01", "worker", 30)
    assert store.claim_requeue(job_id, "01", 30)
    store.count_trial_loss(job_id, "01")
    assert store.claim_nudge(job_id, 30)
    assert store.record_completed_curve(job_id, "00", [0.5, 0.25])  # tuner.pruning's values
    store.record_rung(job_id, "01", 0, 0.5)
    assert store.start(job_id, None)
    assert store.transition(job_id, [JobStatus.RUNNING], JobStatus.CANCELLED, finished_at=utcnow())
    store.release_lease(job_id, "01", "worker")
    return job_id


def test_a_deleted_job_leaves_no_key_under_the_prefix(scratch_store: JobStore) -> None:
    job_id = every_key_of(scratch_store, "acme")
    keys = scratch_store.keys
    written = {keys.job(job_id)} | {keys.job_part(job_id, part) for part in JobPart}
    written |= {keys.trial_part(job_id, part, "01") for part in TrialPart if part is not TrialPart.LEASE}
    assert keys_under(scratch_store, keys.job(job_id)) == written, "the test writes every part of the layout"
    assert scratch_store.delete_job(job_id) is JobDeletion.DELETED
    day = utcnow().strftime("%Y-%m-%d")
    # All that stays is the tenant's count of the day's trials, which counts what it reserved that day.
    assert keys_under(scratch_store) == {keys.tenant_trials("acme", day)}
    assert scratch_store.get_job(job_id) is None
    assert scratch_store.list_jobs("acme", None, 10, None) == ([], None)
    assert scratch_store.jobs_with_status(JobStatus.CANCELLED) == []
    assert scratch_store.usage("acme") == 0


def test_a_delete_of_a_missing_or_deleted_job_finds_nothing(scratch_store: JobStore) -> None:
    assert scratch_store.delete_job(MISSING) is JobDeletion.NOT_FOUND
    job_id = stored_job(scratch_store)
    scratch_store.transition(job_id, [JobStatus.QUEUED], JobStatus.FAILED)
    assert scratch_store.delete_job(job_id) is JobDeletion.DELETED
    assert scratch_store.delete_job(job_id) is JobDeletion.NOT_FOUND


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING])
def test_a_job_not_finished_is_not_deleted(scratch_store: JobStore, status: JobStatus) -> None:
    job_id = stored_job(scratch_store, status=status)
    before = keys_under(scratch_store)
    assert scratch_store.delete_job(job_id) is JobDeletion.NOT_FINISHED
    assert keys_under(scratch_store) == before


def test_a_finished_job_whose_trial_a_worker_holds_is_not_deleted(scratch_store: JobStore) -> None:
    job_id = stored_job(scratch_store)
    assert scratch_store.transition_trial(job_id, trial_record("00"), [None])
    assert scratch_store.acquire_lease(job_id, "00", "worker", 30)
    scratch_store.transition(job_id, [JobStatus.QUEUED], JobStatus.CANCELLED)
    before = keys_under(scratch_store)
    assert scratch_store.delete_job(job_id) is JobDeletion.TRIALS_HELD
    assert keys_under(scratch_store) == before
    scratch_store.release_lease(job_id, "00", "worker")
    assert scratch_store.delete_job(job_id) is JobDeletion.DELETED


def test_deleting_one_job_leaves_the_others_whole(scratch_store: JobStore) -> None:
    kept = stored_job(scratch_store, "acme")
    assert scratch_store.transition_trial(kept, trial_record("00"), [None])
    gone = stored_job(scratch_store, "acme")
    scratch_store.transition(gone, [JobStatus.QUEUED], JobStatus.CANCELLED)
    before = keys_under(scratch_store, scratch_store.keys.job(kept))
    assert scratch_store.delete_job(gone) is JobDeletion.DELETED
    assert keys_under(scratch_store, scratch_store.keys.job(kept)) == before
    assert [v.record.id for v in scratch_store.list_jobs("acme", None, 10, None)[0]] == [kept]


def test_leftover_keys_go_only_for_jobs_that_are_gone_and_once_idle(scratch_store: JobStore) -> None:
    live = stored_job(scratch_store)
    assert scratch_store.transition_trial(live, trial_record("00"), [None])
    late = [scratch_store.keys.trial_losses(MISSING, "00"), scratch_store.keys.search_log(MISSING)]
    scratch_store.redis.set(late[0], 1)
    scratch_store.redis.rpush(late[1], "{}")
    assert scratch_store.delete_leftover_keys(10_000) == [], "touched in the last minute"
    assert sorted(scratch_store.delete_leftover_keys(10_000, min_idle_seconds=0)) == sorted(late)
    assert not keys_under(scratch_store, scratch_store.keys.job(MISSING))
    assert scratch_store.get_trial(live, "00") is not None


def test_finished_jobs_created_before_a_time_with_when_they_ended(scratch_store: JobStore) -> None:
    now = utcnow()
    old = [job_record(created_at=now - timedelta(days=2, seconds=i)) for i in range(3)]
    new = job_record(created_at=now)
    for record in (*old, new):
        scratch_store.create_job(record, b"x")
    ended = now - timedelta(days=1)
    scratch_store.transition(old[0].id, [JobStatus.QUEUED], JobStatus.SUCCEEDED, finished_at=ended)
    scratch_store.transition(old[1].id, [JobStatus.QUEUED], JobStatus.CANCELLED, finished_at=ended)
    scratch_store.transition(new.id, [JobStatus.QUEUED], JobStatus.FAILED, finished_at=now)
    found = dict(scratch_store.finished_jobs_created_before(now - timedelta(days=1)))
    assert found == {old[0].id: ended, old[1].id: ended}, "not the queued one, nor the one created after"
    assert scratch_store.job_ends([old[0].id, old[2].id, MISSING]) == [
        (JobStatus.SUCCEEDED, ended),
        (JobStatus.QUEUED, None),
        (None, None),
    ]
