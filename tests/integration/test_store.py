"""The job store's trial transitions, histories and step lock, against a real Redis server."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from service.core import lifecycle
from service.core.records import ExecutionRecord, JobRecord, TrialRecord, utcnow
from service.core.states import TRIAL_TRANSITIONS, JobStatus, TrialStatus
from service.core.store import JobStore

pytestmark = pytest.mark.integration

SPEC = {"task": "regression", "resources": {"accelerator": "cpu"}, "tuner": {"max_trials": 1}}


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore.from_url(redis_url, prefix=f"store-test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def job_id(store: JobStore) -> str:
    record = JobRecord(id=str(uuid.uuid4()), status=JobStatus.RUNNING, spec=SPEC, created_at=utcnow())
    store.create_job(record, b"npz bytes")
    return record.id


def _trial(status: TrialStatus = TrialStatus.QUEUED, epochs: int = 0) -> TrialRecord:
    history: dict[str, list[float | None]] = {"loss": [float(e) for e in range(epochs)]}
    return TrialRecord(
        id="00",
        status=status,
        hyperparameters={"units_0": 8},
        executions=[ExecutionRecord(history=history)] if epochs else [],
    )


def test_a_trial_is_created_once(store: JobStore, job_id: str) -> None:
    assert lifecycle.queue_trial(store, job_id, _trial())
    assert not lifecycle.queue_trial(store, job_id, _trial().model_copy(update={"hyperparameters": {}}))
    assert store.get_trial(job_id, "00").hyperparameters == {"units_0": 8}  # type: ignore[union-attr]


@pytest.mark.parametrize("final", [TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.CANCELLED])
def test_a_finished_trial_is_never_rewritten(store: JobStore, job_id: str, final: TrialStatus) -> None:
    trial = _trial()
    lifecycle.queue_trial(store, job_id, trial)
    assert lifecycle.start_trial(store, job_id, trial)
    ended = trial.model_copy(update={"status": final, "objective_value": 0.5})
    assert store.transition_trial(job_id, ended, [TrialStatus.RUNNING])
    for target in TrialStatus:
        late = trial.model_copy(update={"status": target, "objective_value": 9.0})
        assert not store.transition_trial(job_id, late, list(TrialStatus)), target
    assert not lifecycle.report_progress(store, job_id, trial)
    assert not lifecycle.hand_back_trial(store, job_id, trial)
    assert not lifecycle.start_trial(store, job_id, trial)
    assert not lifecycle.cancel_trial(store, job_id, trial)
    stored = store.get_trial(job_id, "00")
    assert stored is not None and (stored.status, stored.objective_value) == (final, 0.5)
    assert store.trial_status_counts(job_id) == {final: 1}


def test_the_transition_table_has_no_way_out_of_a_final_status() -> None:
    for status, targets in TRIAL_TRANSITIONS.items():
        assert status.is_final() == (not targets), status


def test_a_queued_trial_cannot_be_completed_without_running(store: JobStore, job_id: str) -> None:
    lifecycle.queue_trial(store, job_id, _trial())
    assert not lifecycle.end_trial(store, job_id, _trial(TrialStatus.COMPLETED))
    assert store.get_trial(job_id, "00").status is TrialStatus.QUEUED  # type: ignore[union-attr]


def test_a_cancelled_queued_trial_is_not_started(store: JobStore, job_id: str) -> None:
    lifecycle.queue_trial(store, job_id, _trial())
    assert lifecycle.cancel_queued_trial(store, job_id, _trial())
    assert not lifecycle.start_trial(store, job_id, _trial())


def test_history_is_appended_while_running_and_replaced_on_start(store: JobStore, job_id: str) -> None:
    lifecycle.queue_trial(store, job_id, _trial())
    assert not store.append_history(job_id, "00", ['[0,{"loss":1.0}]']), "not running yet"
    assert lifecycle.start_trial(store, job_id, _trial(epochs=3))  # as resumed from a 3-epoch checkpoint
    assert store.append_history(job_id, "00", ['[0,{"loss":3.0}]', '[1,{"loss":0.5}]'])
    (trial,) = store.get_trials(job_id)
    assert [e.history for e in trial.executions] == [{"loss": [0.0, 1.0, 2.0, 3.0]}, {"loss": [0.5]}]
    (bare,) = store.get_trials(job_id, history=False)
    assert all(not e.history for e in bare.executions)
    # Taken over from an older checkpoint: epochs written after it are dropped.
    assert lifecycle.start_trial(store, job_id, _trial(epochs=2))
    (trial,) = store.get_trials(job_id)
    assert [e.history for e in trial.executions] == [{"loss": [0.0, 1.0]}]
    running = _trial(TrialStatus.RUNNING)
    assert lifecycle.end_trial(store, job_id, running.model_copy(update={"status": TrialStatus.COMPLETED}))
    assert not store.append_history(job_id, "00", ['[0,{"loss":9.0}]']), "finished"


def test_late_writes_for_a_deleted_job_bring_nothing_back(store: JobStore) -> None:
    gone = str(uuid.uuid4())
    assert not lifecycle.queue_trial(store, gone, _trial())
    store.set_job_fields(gone, nudges=1, enqueued_at=utcnow())
    assert store.get_job(gone) is None
    assert not store.redis.keys(f"{store.prefix}:*")


def test_the_search_state_is_written_only_under_the_step_lock(store: JobStore, job_id: str) -> None:
    assert not store.save_oracle_state(job_id, {"n": 1}, "me"), "no lock held"
    assert store.acquire_step_lock(job_id, "me", seconds=10)
    assert not store.acquire_step_lock(job_id, "other", seconds=10)
    assert store.save_oracle_state(job_id, {"n": 2}, "me")
    assert not store.save_oracle_state(job_id, {"n": 3}, "other")
    assert store.load_oracle_state(job_id) == {"n": 2}
    record = store.get_job(job_id)
    assert record is not None and record.last_step_at is not None
    assert utcnow() - record.last_step_at < timedelta(seconds=5)
    store.release_step_lock(job_id, "other")  # not the owner: nothing happens
    assert store.renew_step_lock(job_id, "me", seconds=10)
    store.release_step_lock(job_id, "me")
    assert not store.save_oracle_state(job_id, {"n": 4}, "me"), "released"
    assert store.acquire_step_lock(job_id, "other", seconds=10)
