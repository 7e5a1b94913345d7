"""The store's trials and search log (`service.core.store_trials`), against a real Redis server: what each
operation returns, stores and refuses. One store on a fresh key prefix per test."""

from __future__ import annotations

import threading
import time

import pytest

from service.core.records import ExecutionRecord, TrialRecord
from service.core.states import TrialStatus
from service.core.store import JobStore, history_entries
from service.core.store_trials import HandIn
from tests.integration.store_records import keys_under, trial_record

pytestmark = pytest.mark.integration

MISSING = "00000000-0000-4000-8000-000000000000"
FINAL = [TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.CANCELLED]


def test_a_new_trial_is_stored_only_from_none_and_only_once(
    scratch_store: JobStore, scratch_job: str
) -> None:
    trial = trial_record("00")
    assert not scratch_store.transition_trial(scratch_job, trial, [TrialStatus.QUEUED]), "not stored yet"
    assert scratch_store.get_trial(scratch_job, "00") is None
    assert scratch_store.transition_trial(scratch_job, trial, [None])
    other = trial.model_copy(update={"hyperparameters": {"units_0": 64}})
    assert not scratch_store.transition_trial(scratch_job, other, [None]), "stored already"
    stored = scratch_store.get_trial(scratch_job, "00")
    assert stored is not None and stored.hyperparameters == {"units_0": 8}


def test_a_trial_of_a_missing_job_is_not_stored(scratch_store: JobStore) -> None:
    assert not scratch_store.transition_trial(MISSING, trial_record(), [None])
    assert scratch_store.get_trials(MISSING) == []
    assert not keys_under(scratch_store)


@pytest.mark.parametrize("final", FINAL)
def test_a_finished_trial_is_never_rewritten_even_when_the_caller_allows_it(
    scratch_store: JobStore, scratch_job: str, final: TrialStatus
) -> None:
    assert scratch_store.transition_trial(scratch_job, trial_record(), [None])
    ended = trial_record(status=final).model_copy(update={"objective_value": 0.5})
    assert scratch_store.transition_trial(scratch_job, ended, [TrialStatus.QUEUED])
    for status in TrialStatus:
        late = trial_record(status=status).model_copy(update={"objective_value": 9.0})
        assert not scratch_store.transition_trial(scratch_job, late, [None, *TrialStatus]), status
    stored = scratch_store.get_trial(scratch_job, "00")
    assert stored is not None and (stored.status, stored.objective_value) == (final, 0.5)
    assert scratch_store.trial_status_counts(scratch_job) == {final: 1}


def test_trial_counts_follow_each_stored_move_and_a_refused_one_counts_nothing(
    scratch_store: JobStore, scratch_job: str
) -> None:
    for trial_id in ("00", "01", "02"):
        assert scratch_store.transition_trial(scratch_job, trial_record(trial_id), [None])
    running = trial_record("00", TrialStatus.RUNNING)
    assert scratch_store.transition_trial(scratch_job, running, [TrialStatus.QUEUED])
    assert scratch_store.transition_trial(scratch_job, running, [TrialStatus.RUNNING]), (
        "progress: same status"
    )
    assert not scratch_store.transition_trial(scratch_job, trial_record("01", TrialStatus.COMPLETED), [])
    assert scratch_store.trial_status_counts(scratch_job) == {TrialStatus.QUEUED: 2, TrialStatus.RUNNING: 1}
    assert scratch_store.trial_status_counts(MISSING) == {}


def test_the_record_is_stored_without_its_history_which_is_kept_apart(
    scratch_store: JobStore, scratch_job: str
) -> None:
    trial = trial_record("00", TrialStatus.RUNNING, epochs=3)
    assert scratch_store.transition_trial(scratch_job, trial, [None], replace_history=True)
    raw = scratch_store.redis.hget(scratch_store.keys.job_trials(scratch_job), "00")
    assert all(not e.history for e in TrialRecord.model_validate_json(raw).executions)
    (with_history,) = scratch_store.get_trials(scratch_job)
    assert with_history.executions[0].history == {"loss": [0.0, 1.0, 2.0]}
    bare = scratch_store.get_trial(scratch_job, "00")
    assert bare is not None and bare.executions == [ExecutionRecord()]


def test_a_long_history_is_replaced_whole(scratch_store: JobStore, scratch_job: str) -> None:
    # Over the scripts' 1,000-argument batches.
    trial = trial_record("00", TrialStatus.RUNNING, epochs=2500)
    assert scratch_store.transition_trial(scratch_job, trial, [None], replace_history=True)
    (stored,) = scratch_store.get_trials(scratch_job)
    assert stored.executions[0].history["loss"] == [float(e) for e in range(2500)]
    shorter = trial_record("00", TrialStatus.RUNNING, epochs=2)
    assert scratch_store.transition_trial(scratch_job, shorter, [TrialStatus.RUNNING], replace_history=True)
    (stored,) = scratch_store.get_trials(scratch_job)
    assert stored.executions[0].history["loss"] == [0.0, 1.0]


def test_history_is_appended_only_while_the_trial_runs(scratch_store: JobStore, scratch_job: str) -> None:
    entries = history_entries([ExecutionRecord(history={"loss": [1.0, 0.5]})])
    assert not scratch_store.append_history(scratch_job, "00", entries), "no trial"
    assert scratch_store.append_history(scratch_job, "00", []), "nothing to append is never refused"
    assert scratch_store.transition_trial(scratch_job, trial_record("00"), [None])
    assert not scratch_store.append_history(scratch_job, "00", entries), "queued"
    assert scratch_store.transition_trial(
        scratch_job, trial_record("00", TrialStatus.RUNNING), [TrialStatus.QUEUED]
    )
    assert scratch_store.append_history(scratch_job, "00", entries)
    assert scratch_store.append_history(
        scratch_job, "00", history_entries([ExecutionRecord(), ExecutionRecord(history={"loss": [0.1]})])
    )
    (trial,) = scratch_store.get_trials(scratch_job)
    assert [e.history for e in trial.executions] == [{"loss": [1.0, 0.5]}, {"loss": [0.1]}]
    done = trial_record("00", TrialStatus.COMPLETED)
    assert scratch_store.transition_trial(scratch_job, done, [TrialStatus.RUNNING])
    assert not scratch_store.append_history(scratch_job, "00", entries), "finished"


def test_history_entries_keep_every_execution_and_metric() -> None:
    executions = [
        ExecutionRecord(history={"loss": [1.0, 0.5], "val_loss": [2.0, None]}),
        ExecutionRecord(history={}),
        ExecutionRecord(history={"loss": [0.3]}),
    ]
    assert history_entries(executions) == [
        '[0,{"loss":1.0,"val_loss":2.0}]',
        '[0,{"loss":0.5,"val_loss":null}]',
        '[2,{"loss":0.3}]',
    ]
    assert history_entries([]) == []


def test_get_trials_lists_every_trial_by_id(scratch_store: JobStore, scratch_job: str) -> None:
    for trial_id in ("10", "02", "00"):
        assert scratch_store.transition_trial(scratch_job, trial_record(trial_id), [None])
    assert [t.id for t in scratch_store.get_trials(scratch_job)] == ["00", "02", "10"]
    assert [t.id for t in scratch_store.get_trials(scratch_job, history=False)] == ["00", "02", "10"]
    assert scratch_store.get_trial(scratch_job, "99") is None


def test_the_search_log_grows_only_under_the_step_lock_from_the_entries_the_step_read(
    scratch_store: JobStore, scratch_job: str
) -> None:
    assert scratch_store.search_log(scratch_job) == (0, [])
    assert not scratch_store.append_search_log(scratch_job, {"state": 1}, "me", 0), "no lock"
    assert scratch_store.acquire_step_lock(scratch_job, "me", 10)
    assert not scratch_store.append_search_log(scratch_job, {"state": 1}, "other", 0), "not the owner"
    assert not scratch_store.append_search_log(scratch_job, {"state": 1}, "me", 1), "read more than there is"
    assert scratch_store.append_search_log(scratch_job, {"state": 1}, "me", 0)
    assert scratch_store.append_search_log(scratch_job, {"step": 2}, "me", 1)
    assert not scratch_store.append_search_log(scratch_job, {"step": 3}, "me", 1), "a stale step"
    assert scratch_store.search_log(scratch_job) == (2, [{"state": 1}, {"step": 2}])
    assert scratch_store.search_log(scratch_job, 2) == (2, [])
    assert scratch_store.search_log(MISSING) == (0, [])


def test_a_search_log_entry_for_a_missing_job_is_refused(scratch_store: JobStore) -> None:
    assert scratch_store.acquire_step_lock(MISSING, "me", 10)
    assert not scratch_store.append_search_log(MISSING, {"state": 1}, "me", 0)
    assert scratch_store.search_log(MISSING) == (0, [])


def test_the_legacy_search_state_is_read_when_there_is_one(scratch_store: JobStore, scratch_job: str) -> None:
    assert scratch_store.legacy_oracle_state(scratch_job) is None
    scratch_store.redis.set(scratch_store.keys.legacy_oracle(scratch_job), '{"ongoing_trials": {}}')
    assert scratch_store.legacy_oracle_state(scratch_job) == {"ongoing_trials": {}}


def test_several_trials_move_in_one_call_each_as_its_own_status_allows(
    scratch_store: JobStore, scratch_job: str
) -> None:
    assert scratch_store.transition_trial(scratch_job, trial_record("00"), [None])
    moved = scratch_store.transition_trials(scratch_job, [trial_record("00"), trial_record("01")], [None])
    assert moved == [False, True], "the first exists already"
    assert scratch_store.transition_trials(scratch_job, [], [None]) == []
    assert scratch_store.trial_status_counts(scratch_job) == {TrialStatus.QUEUED: 2}


def test_trials_move_once_after_redis_lost_its_scripts(scratch_store: JobStore, scratch_job: str) -> None:
    # After a restart or SCRIPT FLUSH, Redis refuses every call of the transition script without running it:
    # the calls are sent again once it is loaded, and each moves its trial once.
    scratch_store.redis.script_flush()
    assert scratch_store.transition_trials(scratch_job, [trial_record("00"), trial_record("01")], [None]) == [
        True,
        True,
    ]
    scratch_store.redis.script_flush()
    assert scratch_store.transition_trial(
        scratch_job, trial_record("00", status=TrialStatus.RUNNING), [None, TrialStatus.QUEUED]
    )
    assert scratch_store.trial_status_counts(scratch_job) == {TrialStatus.QUEUED: 1, TrialStatus.RUNNING: 1}


def test_a_handed_in_result_takes_the_free_step_lock_and_waits_while_it_is_held(
    scratch_store: JobStore, scratch_job: str
) -> None:
    store, job = scratch_store, scratch_job
    assert store.hand_in_result(job, "00", '{"r": 0}', "worker-a", 10) is HandIn.ACQUIRED
    assert store.acquire_step_lock(job, "worker-a", 10) is False, "worker-a holds it"
    assert store.hand_in_result(job, "01", '{"r": 1}', "worker-b", 10) is HandIn.BUSY
    assert store.hand_in_result(job, "01", '{"r": 2}', "worker-b", 10) is HandIn.BUSY, "handed in again"
    assert store.handed_in_results(job) == {"00": '{"r": 0}', "01": '{"r": 2}'}, "the last of each trial"
    assert store.result_handed_in(job, "01") and not store.result_handed_in(job, "02")
    length, entries, waiting = store.search_log_and_results(job)
    assert (length, entries, waiting) == (0, [], store.handed_in_results(job))
    assert store.step_or_taken_in(job, "01", "worker-b", 10) is HandIn.BUSY
    store.release_step_lock(job, "worker-a")
    assert store.step_or_taken_in(job, "01", "worker-b", 10) is HandIn.ACQUIRED
    assert not store.acquire_step_lock(job, "worker-a", 10), "worker-b holds it now"


def test_a_result_taken_in_is_removed_and_its_waiting_worker_told(
    scratch_store: JobStore, scratch_job: str
) -> None:
    store, job = scratch_store, scratch_job
    assert store.hand_in_result(job, "00", "{}", "holder", 10) is HandIn.ACQUIRED
    assert store.hand_in_result(job, "01", "{}", "waiter", 10) is HandIn.BUSY
    started = time.monotonic()
    assert not store.wait_taken_in(job, "01", 0.2)
    assert time.monotonic() - started >= 0.15, "nothing taken in, the lock held: the wait runs out"
    # The holder's step took in both: its own result needs no token, the waiter's gets one.
    store.results_taken_in(job, ["00", "01"], ["01"])
    assert store.handed_in_results(job) == {}
    started = time.monotonic()
    assert store.wait_taken_in(job, "01", 30), "its token says so"
    assert time.monotonic() - started < 10
    assert store.step_or_taken_in(job, "01", "waiter", 10) is HandIn.TAKEN, "even with the lock held"
    store.release_step_lock(job, "holder")
    assert store.step_or_taken_in(job, "01", "waiter", 10) is HandIn.TAKEN, "and with it free"
    assert store.acquire_step_lock(job, "someone", 10), "TAKEN takes no lock"


def test_waiting_on_a_result_ends_when_the_step_lock_is_released(
    scratch_store: JobStore, scratch_job: str
) -> None:
    store, job = scratch_store, scratch_job
    assert store.hand_in_result(job, "00", "{}", "holder", 10) is HandIn.ACQUIRED
    assert store.hand_in_result(job, "01", "{}", "waiter", 10) is HandIn.BUSY
    releaser = threading.Timer(0.2, store.release_step_lock, (job, "holder"))
    releaser.start()
    started = time.monotonic()
    assert not store.wait_taken_in(job, "01", 30), "not taken in"
    assert time.monotonic() - started < 10, "woken by the release: the waiter may take the step"
    releaser.join()
    assert store.step_or_taken_in(job, "01", "waiter", 10) is HandIn.ACQUIRED


def test_a_result_for_a_missing_job_is_not_handed_in(scratch_store: JobStore) -> None:
    assert scratch_store.hand_in_result(MISSING, "00", "{}", "me", 10) is HandIn.GONE
    assert not keys_under(scratch_store), "no result and no lock left behind"
    assert scratch_store.step_or_taken_in(MISSING, "00", "me", 10) is HandIn.TAKEN
