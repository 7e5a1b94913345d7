"""The trial runner's failure rules, in this process, against a real Redis server (no training needed)."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.states import JobStatus, TrialStatus
from tests.integration.conftest import running_job
from worker import runner, search
from worker.context import WorkerContext

pytestmark = pytest.mark.integration


def test_an_unexpected_error_outside_training_fails_the_job_and_its_trial(
    worker_ctx: WorkerContext,
    sent_trials: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = running_job(worker_ctx)
    search.advance(worker_ctx, job_id)

    def unreadable(*args: Any) -> Any:
        raise ValueError("a stored spec this worker cannot read")

    monkeypatch.setattr(runner, "load_spec", unreadable)
    runner.run_trial(worker_ctx, job_id, sent_trials[0])
    record = worker_ctx.store.get_job(job_id)
    assert record is not None and record.status is JobStatus.FAILED
    assert record.error is not None and record.error.code == "search_error"
    trial = worker_ctx.store.get_trial(job_id, sent_trials[0])
    assert trial is not None and trial.status is TrialStatus.FAILED
    assert trial.error is not None and "cannot read" in trial.error.message
    assert worker_ctx.store.lease_holder(job_id, sent_trials[0]) is None
