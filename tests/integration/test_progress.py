"""A running trial's progress hook against a real Redis server: what it writes, and why it stops a trial."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from service.core import lifecycle
from service.core.records import TrialRecord
from service.core.states import TrialStatus
from service.core.store import JobStore
from worker.lease import Keeper, trial_lease
from worker.progress import TrialProgress
from worker.stops import StopReason

pytestmark = pytest.mark.integration

LOGS = {"loss": 0.5, "val_loss": float("nan")}


@pytest.fixture
def record(scratch_store: JobStore, scratch_job: str) -> TrialRecord:
    trial = TrialRecord(id="00", status=TrialStatus.RUNNING, hyperparameters={})
    lifecycle.queue_trial(scratch_store, scratch_job, trial)
    lifecycle.start_trial(scratch_store, scratch_job, trial)
    return trial


@pytest.fixture
def lease(scratch_store: JobStore, scratch_job: str) -> Iterator[Keeper]:
    assert scratch_store.acquire_lease(scratch_job, "00", "me", 30)
    with trial_lease(scratch_store, scratch_job, "00", "me", 30) as keeper:
        yield keeper


def _progress(
    scratch_store: JobStore,
    scratch_job: str,
    record: TrialRecord,
    lease: Keeper,
    timeout: float | None = None,
    runtime_left: float = 3600,
) -> TrialProgress:
    progress = TrialProgress(scratch_store, scratch_job, record, lease, "node@host", timeout, runtime_left)
    progress.start_execution()
    return progress


def _stored_epochs(scratch_store: JobStore, scratch_job: str) -> int:
    (trial,) = scratch_store.get_trials(scratch_job)
    return len(trial.executions[0].history["loss"]) if trial.executions else 0


def test_epochs_are_appended_about_twice_a_second_and_flushed_at_the_end(
    scratch_store: JobStore, scratch_job: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(scratch_store, scratch_job, record, lease)
    for epoch in range(200):
        assert progress(epoch, LOGS) is None
    assert _stored_epochs(scratch_store, scratch_job) == 1, (
        "the first epoch is written at once, the rest wait"
    )
    time.sleep(0.6)
    assert progress(200, LOGS) is None
    assert _stored_epochs(scratch_store, scratch_job) == 201
    progress(201, LOGS)
    progress.flush_history()
    (trial,) = scratch_store.get_trials(scratch_job)
    assert trial.executions[0].history == {"loss": [0.5] * 202, "val_loss": [None] * 202}
    assert record.executions[0].history == trial.executions[0].history


def test_a_trial_over_its_timeout_stops_with_timed_out_for_good(
    scratch_store: JobStore, scratch_job: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(scratch_store, scratch_job, record, lease, timeout=0.2)
    assert progress(0, LOGS) is None
    time.sleep(0.3)
    assert progress(1, LOGS) is StopReason.TIMED_OUT
    assert progress.check() is StopReason.TIMED_OUT


def test_a_cancelled_job_stops_its_trial(
    scratch_store: JobStore, scratch_job: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(scratch_store, scratch_job, record, lease)
    assert progress.check() is None
    assert lifecycle.cancel(scratch_store, scratch_job)
    assert progress.check() is StopReason.JOB_ENDED


def test_a_trial_no_longer_running_stops(
    scratch_store: JobStore, scratch_job: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(scratch_store, scratch_job, record, lease)
    assert lifecycle.cancel_trial(scratch_store, scratch_job, record)
    assert progress.check() is StopReason.JOB_ENDED


def test_a_job_past_its_runtime_stops_its_trial(
    scratch_store: JobStore, scratch_job: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(scratch_store, scratch_job, record, lease, runtime_left=0.1)
    time.sleep(0.2)
    assert progress.check() is StopReason.OUT_OF_RUNTIME


def test_a_draining_worker_hands_its_trial_back(
    scratch_store: JobStore, scratch_job: str, record: TrialRecord, lease: Keeper
) -> None:
    progress = _progress(scratch_store, scratch_job, record, lease)
    scratch_store.set_draining("node@host", True)
    try:
        assert progress.check() is StopReason.SHUTDOWN
    finally:
        scratch_store.set_draining("node@host", False)


def test_a_lost_lease_stops_the_trial_before_anything_is_written(
    scratch_store: JobStore, scratch_job: str
) -> None:
    trial = TrialRecord(id="00", status=TrialStatus.RUNNING, hyperparameters={})
    lifecycle.queue_trial(scratch_store, scratch_job, trial)
    lifecycle.start_trial(scratch_store, scratch_job, trial)
    assert scratch_store.acquire_lease(scratch_job, "00", "me", 0.3)
    with trial_lease(scratch_store, scratch_job, "00", "me", 0.3) as lease:
        progress = _progress(scratch_store, scratch_job, trial, lease)
        scratch_store.release_lease(scratch_job, "00", "me")
        assert scratch_store.acquire_lease(scratch_job, "00", "new owner", 30)
        time.sleep(0.4)
        assert progress(0, LOGS) is StopReason.LEASE_LOST
    assert _stored_epochs(scratch_store, scratch_job) == 0
