"""A job's run on a worker (`worker.job_runs.execute`) on a real Redis: it runs only the run the job names,
and every way it ends is a final state with a code."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from service.core.job_runs import RunStatus
from service.core.recheck import Recheck
from service.core.records import utcnow
from service.core.store import JobStore
from service.core.store_runs import Rechecks
from worker.job_runs import RunFailed, execute

pytestmark = pytest.mark.integration


def begun(store: JobStore, job_id: str) -> Recheck:
    now = utcnow()
    run = Recheck(
        run_id=str(uuid.uuid4()),
        status=RunStatus.QUEUED,
        requested_at=now,
        deadline_at=now + timedelta(minutes=1),
        top_k=2,
        seeds=2,
    )
    assert Rechecks(store).begin(job_id, run, now) is None
    return run


def test_a_run_is_marked_running_then_stores_what_its_work_returns(
    scratch_store: JobStore, scratch_job: str
) -> None:
    run = begun(scratch_store, scratch_job)
    seen: list[Recheck] = []

    def work(record: Recheck) -> dict[str, Any]:
        seen.append(record)
        assert Rechecks(scratch_store).get(scratch_job) == record
        return {"status": RunStatus.SUCCEEDED}

    execute(Rechecks(scratch_store), scratch_job, run.run_id, 600, work)
    (running,) = seen
    assert running.status is RunStatus.RUNNING and running.started_at is not None
    assert running.deadline_at == running.started_at + timedelta(seconds=600)
    done = Rechecks(scratch_store).get(scratch_job)
    assert done is not None and done.status is RunStatus.SUCCEEDED and done.finished_at is not None


@pytest.mark.parametrize(
    ("failure", "code", "message"),
    [
        (RunFailed("timed_out", "past its deadline"), "timed_out", "past its deadline"),
        (ValueError("a layer's shape"), "recheck_error", "ValueError: a layer's shape"),
    ],
)
def test_whatever_the_work_raises_ends_the_run_failed_with_a_code(
    scratch_store: JobStore, scratch_job: str, failure: Exception, code: str, message: str
) -> None:
    run = begun(scratch_store, scratch_job)

    def work(record: Recheck) -> dict[str, Any]:
        raise failure

    execute(Rechecks(scratch_store), scratch_job, run.run_id, 600, work)
    failed = Rechecks(scratch_store).get(scratch_job)
    assert failed is not None and failed.status is RunStatus.FAILED and failed.finished_at is not None
    assert failed.error is not None and (failed.error.code, failed.error.message) == (code, message)


def test_a_replaced_or_ended_run_does_nothing(scratch_store: JobStore, scratch_job: str) -> None:
    run = begun(scratch_store, scratch_job)

    def work(record: Recheck) -> dict[str, Any]:
        raise AssertionError("a run that is not the job's must not run")

    execute(Rechecks(scratch_store), scratch_job, "another-run", 600, work)
    assert Rechecks(scratch_store).get(scratch_job) == run
    ended = run.model_copy(update={"status": RunStatus.SUCCEEDED})
    assert Rechecks(scratch_store).update(scratch_job, ended)
    execute(Rechecks(scratch_store), scratch_job, run.run_id, 600, work)
    execute(Rechecks(scratch_store), str(uuid.uuid4()), run.run_id, 600, work)  # no such job
