"""A running trial's progress hook against a real Redis server: what it writes, and why it stops a trial."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from service.core import lifecycle
from service.core.records import JobRecord, TrialRecord, utcnow
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobStore
from worker.lease import Keeper, trial_lease
from worker.progress import TrialProgress
from worker.stops import StopReason

pytestmark = pytest.mark.integration

SPEC = {"task": "regression", "resources": {"accelerator": "cpu"}, "tuner": {"max_trials": 1}}
LOGS = {"loss": 0.5, "val_loss": float("nan")}


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore.from_url(redis_url, prefix=f"progress-test-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def job_id(store: JobStore) -> str:
    record = JobRecord(id=str(uuid.uuid4()), status=JobStatus.RUNNING, spec=SPEC, created_at=utcnow())
    store.create_job(record, b"npz bytes")
    return record.id


@pytest.fixture
def record(store: JobStore, job_id: str) -> TrialRecord:
    trial = TrialRecord(id="00", status=TrialStatus.RUNNING, hyperparameters={})
    lifecycle.queue_trial(store, job_id, trial)
    lifecycle.start_trial(store, job_id, trial)
    return trial


@pytest.fixture
def lease(store: JobStore, job_id: str) -> Iterator[Keeper]:
    assert store.acquire_lease(job_id, "00", "me", 30)
    with trial_lease(store, job_id, "00", "me", 30) as keeper:
        yield keeper


def _progress(
    store: JobStore,
    job_id: str,
    record: TrialRecord,
    lease: Keeper,
    timeout: float | None = None,
    runtime_left: float = 3600,
) -> TrialProgress:
    progress = TrialProgress(store, job_id, record, lease, "node@host", timeout, runtime_left)
    progress.start_execution()
    return progress


def _stored_epochs(store: JobStore, job_id: str) -> int:
    (trial,) = store.get_trials(job_id)
    return len(trial.executions[0].history["loss"]) if trial.executions else 0


def test_epochs_are_appended_about_twice_a_second_and_flushed_at_the_end(
    store: JobStore, job_id: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(store, job_id, record, lease)
    for epoch in range(200):
        assert progress(epoch, LOGS) is None
    assert _stored_epochs(store, job_id) == 1, "the first epoch is written at once, the rest wait"
    time.sleep(0.6)
    assert progress(200, LOGS) is None
    assert _stored_epochs(store, job_id) == 201
    progress(201, LOGS)
    progress.flush_history()
    (trial,) = store.get_trials(job_id)
    assert trial.executions[0].history == {"loss": [0.5] * 202, "val_loss": [None] * 202}
    assert record.executions[0].history == trial.executions[0].history


def test_a_trial_over_its_timeout_stops_with_timed_out_for_good(
    store: JobStore, job_id: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(store, job_id, record, lease, timeout=0.2)
    assert progress(0, LOGS) is None
    time.sleep(0.3)
    assert progress(1, LOGS) is StopReason.TIMED_OUT
    assert progress.check() is StopReason.TIMED_OUT


def test_a_cancelled_job_stops_its_trial(
    store: JobStore, job_id: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(store, job_id, record, lease)
    assert progress.check() is None
    assert lifecycle.cancel(store, job_id)
    assert progress.check() is StopReason.JOB_ENDED


def test_a_trial_no_longer_running_stops(
    store: JobStore, job_id: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(store, job_id, record, lease)
    assert lifecycle.cancel_trial(store, job_id, record)
    assert progress.check() is StopReason.JOB_ENDED


def test_a_job_past_its_runtime_stops_its_trial(
    store: JobStore, job_id: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(store, job_id, record, lease, runtime_left=0.1)
    time.sleep(0.2)
    assert progress.check() is StopReason.OUT_OF_RUNTIME


def test_a_draining_worker_hands_its_trial_back(
    store: JobStore, job_id: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(store, job_id, record, lease)
    store.set_draining("node@host", True)
    try:
        assert progress.check() is StopReason.SHUTDOWN
    finally:
        store.set_draining("node@host", False)


def test_a_lost_lease_stops_the_trial_before_anything_is_written(store: JobStore, job_id: str) -> None:
    trial = TrialRecord(id="00", status=TrialStatus.RUNNING, hyperparameters={})
    lifecycle.queue_trial(store, job_id, trial)
    lifecycle.start_trial(store, job_id, trial)
    assert store.acquire_lease(job_id, "00", "me", 0.3)
    with trial_lease(store, job_id, "00", "me", 0.3) as lease:
        progress = _progress(store, job_id, trial, lease)
        store.release_lease(job_id, "00", "me")
        assert store.acquire_lease(job_id, "00", "new owner", 30)
        time.sleep(0.4)
        assert progress(0, LOGS) is StopReason.LEASE_LOST
    assert _stored_epochs(store, job_id) == 0
