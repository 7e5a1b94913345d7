"""The store's locks, leases and claims (`service.core.store_coordination`), against a real Redis server:
one owner at a time, renewed and released only by it, lapsing on time. A fresh key prefix per test."""

from __future__ import annotations

import threading
import time

import pytest

from service.core.states import JobStatus
from service.core.store import JobStore
from tests.integration.store_records import stored_job, trial_record

pytestmark = pytest.mark.integration

MISSING = "00000000-0000-4000-8000-000000000000"
SHORT = 0.2  # a lock that lapses within a test


def test_the_step_lock_has_one_owner_who_alone_renews_and_releases_it(scratch_store: JobStore) -> None:
    assert scratch_store.acquire_step_lock("job", "me", 10)
    assert not scratch_store.acquire_step_lock("job", "me", 10), "not reentrant"
    assert not scratch_store.acquire_step_lock("job", "other", 10)
    assert scratch_store.acquire_step_lock("another job", "other", 10), "one lock per job"
    assert not scratch_store.renew_step_lock("job", "other", 10)
    scratch_store.release_step_lock("job", "other")
    assert not scratch_store.acquire_step_lock("job", "other", 10), "a release by another owner is ignored"
    assert scratch_store.renew_step_lock("job", "me", 10)
    scratch_store.release_step_lock("job", "me")
    assert not scratch_store.renew_step_lock("job", "me", 10), "released: nothing to renew"
    assert scratch_store.acquire_step_lock("job", "other", 10)


def test_a_step_waiting_for_the_lock_is_woken_by_its_release(scratch_store: JobStore) -> None:
    assert scratch_store.acquire_step_lock("job", "me", 10)
    started = time.monotonic()
    scratch_store.wait_step_lock("job", SHORT)
    assert time.monotonic() - started >= SHORT * 0.9, "held: the wait runs to its timeout"
    scratch_store.release_step_lock("job", "other")  # not its owner: no release, no wake
    started = time.monotonic()
    scratch_store.wait_step_lock("job", SHORT)
    assert time.monotonic() - started >= SHORT * 0.9
    releaser = threading.Timer(SHORT, scratch_store.release_step_lock, ("job", "me"))
    releaser.start()
    started = time.monotonic()
    scratch_store.wait_step_lock("job", 30)
    assert time.monotonic() - started < 10, "woken by the release, long before the timeout"
    releaser.join()
    assert scratch_store.acquire_step_lock("job", "other", 10)
    scratch_store.release_step_lock("job", "other")
    started = time.monotonic()
    scratch_store.wait_step_lock("job", 30)  # the token a release left while no one waited
    assert time.monotonic() - started < 10


def test_the_step_lock_lapses_unless_renewed(scratch_store: JobStore) -> None:
    assert scratch_store.acquire_step_lock("job", "me", SHORT)
    assert scratch_store.renew_step_lock("job", "me", 10)
    time.sleep(2 * SHORT)
    assert not scratch_store.acquire_step_lock("job", "other", 10), "renewed past its first length"
    assert scratch_store.renew_step_lock("job", "me", SHORT)
    time.sleep(2 * SHORT)
    assert scratch_store.acquire_step_lock("job", "other", 10), "lapsed"


def test_a_trial_lease_has_one_holder_who_alone_renews_and_releases_it(scratch_store: JobStore) -> None:
    assert scratch_store.lease_holder("job", "00") is None
    assert scratch_store.acquire_lease("job", "00", "me", 10)
    assert not scratch_store.acquire_lease("job", "00", "other", 10)
    assert scratch_store.acquire_lease("job", "01", "other", 10), "one lease per trial"
    assert scratch_store.lease_holder("job", "00") == "me"
    assert not scratch_store.renew_lease("job", "00", "other", 10)
    scratch_store.release_lease("job", "00", "other")
    assert scratch_store.lease_holder("job", "00") == "me"
    assert scratch_store.renew_lease("job", "00", "me", 10)
    scratch_store.release_lease("job", "00", "me")
    assert scratch_store.lease_holder("job", "00") is None
    assert not scratch_store.renew_lease("job", "00", "me", 10)


def test_a_lease_lapses_unless_renewed(scratch_store: JobStore) -> None:
    assert scratch_store.acquire_lease("job", "00", "me", SHORT)
    time.sleep(2 * SHORT)
    assert scratch_store.lease_holder("job", "00") is None
    assert scratch_store.acquire_lease("job", "00", "other", 10)


def test_holds_trials_sees_a_lease_on_any_recorded_trial(scratch_store: JobStore, scratch_job: str) -> None:
    assert not scratch_store.holds_trials(scratch_job), "no trial"
    for trial_id in ("00", "01"):
        assert scratch_store.transition_trial(scratch_job, trial_record(trial_id), [None])
    assert not scratch_store.holds_trials(scratch_job)
    assert scratch_store.acquire_lease(scratch_job, "01", "me", 10)
    assert scratch_store.holds_trials(scratch_job)
    scratch_store.release_lease(scratch_job, "01", "me")
    assert not scratch_store.holds_trials(scratch_job)
    assert not scratch_store.holds_trials(MISSING)


def test_a_requeue_is_claimed_once_per_window_per_trial(scratch_store: JobStore) -> None:
    assert scratch_store.claim_requeue("job", "00", SHORT)
    assert not scratch_store.claim_requeue("job", "00", SHORT)
    assert scratch_store.claim_requeue("job", "01", SHORT), "another trial"
    time.sleep(2 * SHORT)
    assert scratch_store.claim_requeue("job", "00", SHORT), "the window passed"


def test_a_trials_losses_are_counted_one_by_one(scratch_store: JobStore) -> None:
    assert scratch_store.trial_losses("job", "00") == 0
    assert [scratch_store.count_trial_loss("job", "00") for _ in range(3)] == [1, 2, 3]
    assert scratch_store.trial_losses("job", "00") == 3
    assert scratch_store.trial_losses("job", "01") == 0


def test_a_resend_is_claimed_by_one_of_the_callers_that_read_the_same_count(scratch_store: JobStore) -> None:
    job_id = stored_job(scratch_store)
    scratch_store.set_job_fields(job_id, start_sends=1)
    assert [scratch_store.claim_resend(job_id, 1) for _ in range(3)] == [True, False, False]
    record = scratch_store.get_job(job_id)
    assert record is not None and record.start_sends == 2 and record.enqueued_at is not None
    assert scratch_store.claim_resend(job_id, 2), "the next sweep, having read the new count"


def test_a_resend_is_refused_for_a_job_not_queued_or_missing(scratch_store: JobStore) -> None:
    job_id = stored_job(scratch_store)
    scratch_store.start(job_id, None)
    assert not scratch_store.claim_resend(job_id, 0)
    assert scratch_store.get_job(job_id).start_sends == 0  # type: ignore[union-attr]
    assert scratch_store.get_status(job_id) is JobStatus.RUNNING
    assert not scratch_store.claim_resend(MISSING, 0)
    assert scratch_store.get_job(MISSING) is None


def test_a_nudge_is_claimed_once_per_window_per_job(scratch_store: JobStore) -> None:
    assert scratch_store.claim_nudge("job", SHORT)
    assert not scratch_store.claim_nudge("job", SHORT)
    assert scratch_store.claim_nudge("another job", SHORT)
    time.sleep(2 * SHORT)
    assert scratch_store.claim_nudge("job", SHORT)


def test_the_cleanup_is_claimed_by_one_replica_whose_claim_alone_it_extends(scratch_store: JobStore) -> None:
    assert scratch_store.claim_cleanup("a", 10)
    assert not scratch_store.claim_cleanup("b", 10)
    scratch_store.extend_cleanup_claim("b", 0)
    assert not scratch_store.claim_cleanup("b", 10), "only the owner changes its claim"
    scratch_store.extend_cleanup_claim("a", SHORT)
    assert not scratch_store.claim_cleanup("b", 10)
    time.sleep(2 * SHORT)
    assert scratch_store.claim_cleanup("b", 10), "lapsed at its new time"
