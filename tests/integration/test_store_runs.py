"""A job's runs in Redis (`service.core.store_runs`): for each kind (finalization, recheck), one active at a
time, written only by its own run, never into a deleted job."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from service.core.job_runs import RunStatus
from service.core.records import utcnow
from service.core.store import JobStore
from service.core.store_runs import Finalizations, JobRuns, Rechecks

pytestmark = pytest.mark.integration

KINDS = [Finalizations, Rechecks]
# What each kind needs besides a run's own fields.
EXTRA: dict[type[JobRuns[Any]], dict[str, Any]] = {Finalizations: {}, Rechecks: {"top_k": 2, "seeds": 3}}


def queued(kind: type[JobRuns[Any]], seconds: float = 60) -> Any:
    now = utcnow()
    return kind.model(
        run_id=str(uuid.uuid4()),
        status=RunStatus.QUEUED,
        requested_at=now,
        deadline_at=now + timedelta(seconds=seconds),
        **EXTRA[kind],
    )


@pytest.mark.parametrize("kind", KINDS)
def test_one_run_of_a_kind_is_active_at_a_time(
    scratch_store: JobStore, scratch_job: str, kind: type[JobRuns[Any]]
) -> None:
    runs = kind(scratch_store)
    first, second = queued(kind), queued(kind)
    assert runs.begin(scratch_job, first, utcnow()) is None
    active = runs.begin(scratch_job, second, utcnow())
    assert active is not None and active.run_id == first.run_id
    assert runs.get(scratch_job) == first
    assert getattr(scratch_store.get_job(scratch_job), kind.field) == first


def test_kinds_of_runs_are_apart(scratch_store: JobStore, scratch_job: str) -> None:
    finalization, recheck = queued(Finalizations), queued(Rechecks)
    assert Finalizations(scratch_store).begin(scratch_job, finalization, utcnow()) is None
    assert Rechecks(scratch_store).begin(scratch_job, recheck, utcnow()) is None  # a finalization runs
    job = scratch_store.get_job(scratch_job)
    assert job is not None and (job.finalization, job.recheck) == (finalization, recheck)


@pytest.mark.parametrize("kind", KINDS)
def test_an_ended_or_lost_run_is_replaced(
    scratch_store: JobStore, scratch_job: str, kind: type[JobRuns[Any]]
) -> None:
    runs = kind(scratch_store)
    lost = queued(kind, seconds=-1)  # past its deadline already
    assert runs.begin(scratch_job, lost, utcnow()) is None
    replacement = queued(kind)
    assert runs.begin(scratch_job, replacement, utcnow()) is None
    # The lost run's late result is dropped; the replacement's is kept.
    late = lost.model_copy(update={"status": RunStatus.SUCCEEDED})
    assert not runs.update(scratch_job, late)
    done = replacement.model_copy(update={"status": RunStatus.SUCCEEDED})
    assert runs.update(scratch_job, done)
    assert runs.get(scratch_job) == done
    # An ended run is never rewritten by its run, and a new one may start.
    assert not runs.update(scratch_job, replacement)
    assert runs.begin(scratch_job, queued(kind), utcnow()) is None


@pytest.mark.parametrize("kind", KINDS)
def test_a_deleted_job_stays_deleted(scratch_store: JobStore, kind: type[JobRuns[Any]]) -> None:
    runs = kind(scratch_store)
    missing = str(uuid.uuid4())
    assert runs.begin(missing, queued(kind), utcnow()) is None
    assert runs.get(missing) is None
    assert not runs.update(missing, queued(kind))
    assert not scratch_store.redis.exists(scratch_store.keys.job(missing))
