"""The job scratch_store's trial transitions, histories and step lock, against a real Redis server."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from service.core import lifecycle
from service.core.records import ExecutionRecord, TrialRecord, utcnow
from service.core.states import TRIAL_TRANSITIONS, TrialStatus
from service.core.store import JobStore

pytestmark = pytest.mark.integration


def _trial(status: TrialStatus = TrialStatus.QUEUED, epochs: int = 0) -> TrialRecord:
    history: dict[str, list[float | None]] = {"loss": [float(e) for e in range(epochs)]}
    return TrialRecord(
        id="00",
        status=status,
        hyperparameters={"units_0": 8},
        executions=[ExecutionRecord(history=history)] if epochs else [],
    )


def test_a_trial_is_created_once(scratch_store: JobStore, scratch_job: str) -> None:
    assert lifecycle.queue_trial(scratch_store, scratch_job, _trial())
    assert not lifecycle.queue_trial(
        scratch_store, scratch_job, _trial().model_copy(update={"hyperparameters": {}})
    )
    assert scratch_store.get_trial(scratch_job, "00").hyperparameters == {"units_0": 8}  # type: ignore[union-attr]


@pytest.mark.parametrize("final", [TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.CANCELLED])
def test_a_finished_trial_is_never_rewritten(
    scratch_store: JobStore, scratch_job: str, final: TrialStatus
) -> None:
    trial = _trial()
    lifecycle.queue_trial(scratch_store, scratch_job, trial)
    assert lifecycle.start_trial(scratch_store, scratch_job, trial)
    ended = trial.model_copy(update={"status": final, "objective_value": 0.5})
    assert scratch_store.transition_trial(scratch_job, ended, [TrialStatus.RUNNING])
    for target in TrialStatus:
        late = trial.model_copy(update={"status": target, "objective_value": 9.0})
        assert not scratch_store.transition_trial(scratch_job, late, list(TrialStatus)), target
    assert not lifecycle.report_progress(scratch_store, scratch_job, trial)
    assert not lifecycle.hand_back_trial(scratch_store, scratch_job, trial)
    assert not lifecycle.start_trial(scratch_store, scratch_job, trial)
    assert not lifecycle.cancel_trial(scratch_store, scratch_job, trial)
    stored = scratch_store.get_trial(scratch_job, "00")
    assert stored is not None and (stored.status, stored.objective_value) == (final, 0.5)
    assert scratch_store.trial_status_counts(scratch_job) == {final: 1}


def test_the_transition_table_has_no_way_out_of_a_final_status() -> None:
    for status, targets in TRIAL_TRANSITIONS.items():
        assert status.is_final() == (not targets), status


def test_a_queued_trial_cannot_be_completed_without_running(
    scratch_store: JobStore, scratch_job: str
) -> None:
    lifecycle.queue_trial(scratch_store, scratch_job, _trial())
    assert not lifecycle.end_trial(scratch_store, scratch_job, _trial(TrialStatus.COMPLETED))
    assert scratch_store.get_trial(scratch_job, "00").status is TrialStatus.QUEUED  # type: ignore[union-attr]


def test_a_cancelled_queued_trial_is_not_started(scratch_store: JobStore, scratch_job: str) -> None:
    lifecycle.queue_trial(scratch_store, scratch_job, _trial())
    assert lifecycle.cancel_queued_trial(scratch_store, scratch_job, _trial())
    assert not lifecycle.start_trial(scratch_store, scratch_job, _trial())


def test_history_is_appended_while_running_and_replaced_on_start(
    scratch_store: JobStore, scratch_job: str
) -> None:
    lifecycle.queue_trial(scratch_store, scratch_job, _trial())
    assert not scratch_store.append_history(scratch_job, "00", ['[0,{"loss":1.0}]']), "not running yet"
    assert lifecycle.start_trial(
        scratch_store, scratch_job, _trial(epochs=3)
    )  # as resumed from a 3-epoch checkpoint
    assert scratch_store.append_history(scratch_job, "00", ['[0,{"loss":3.0}]', '[1,{"loss":0.5}]'])
    (trial,) = scratch_store.get_trials(scratch_job)
    assert [e.history for e in trial.executions] == [{"loss": [0.0, 1.0, 2.0, 3.0]}, {"loss": [0.5]}]
    (bare,) = scratch_store.get_trials(scratch_job, history=False)
    assert all(not e.history for e in bare.executions)
    # Taken over from an older checkpoint: epochs written after it are dropped.
    assert lifecycle.start_trial(scratch_store, scratch_job, _trial(epochs=2))
    (trial,) = scratch_store.get_trials(scratch_job)
    assert [e.history for e in trial.executions] == [{"loss": [0.0, 1.0]}]
    running = _trial(TrialStatus.RUNNING)
    assert lifecycle.end_trial(
        scratch_store, scratch_job, running.model_copy(update={"status": TrialStatus.COMPLETED})
    )
    assert not scratch_store.append_history(scratch_job, "00", ['[0,{"loss":9.0}]']), "finished"


def test_late_writes_for_a_deleted_job_bring_nothing_back(scratch_store: JobStore) -> None:
    gone = str(uuid.uuid4())
    assert not lifecycle.queue_trial(scratch_store, gone, _trial())
    scratch_store.set_job_fields(gone, nudges=1, enqueued_at=utcnow())
    assert scratch_store.get_job(gone) is None
    assert not scratch_store.redis.keys(f"{scratch_store.prefix}:*")


def test_the_search_state_is_written_only_under_the_step_lock(
    scratch_store: JobStore, scratch_job: str
) -> None:
    assert not scratch_store.save_oracle_state(scratch_job, {"n": 1}, "me"), "no lock held"
    assert scratch_store.acquire_step_lock(scratch_job, "me", seconds=10)
    assert not scratch_store.acquire_step_lock(scratch_job, "other", seconds=10)
    assert scratch_store.save_oracle_state(scratch_job, {"n": 2}, "me")
    assert not scratch_store.save_oracle_state(scratch_job, {"n": 3}, "other")
    assert scratch_store.load_oracle_state(scratch_job) == {"n": 2}
    record = scratch_store.get_job(scratch_job)
    assert record is not None and record.last_step_at is not None
    assert utcnow() - record.last_step_at < timedelta(seconds=5)
    scratch_store.release_step_lock(scratch_job, "other")  # not the owner: nothing happens
    assert scratch_store.renew_step_lock(scratch_job, "me", seconds=10)
    scratch_store.release_step_lock(scratch_job, "me")
    assert not scratch_store.save_oracle_state(scratch_job, {"n": 4}, "me"), "released"
    assert scratch_store.acquire_step_lock(scratch_job, "other", seconds=10)
