"""A job's finalization in Redis (`service.core.store_finalization`): one active at a time, written only by
its own run, never into a deleted job."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from service.core.finalization import Finalization, FinalizationStatus
from service.core.records import utcnow
from service.core.store import JobStore
from service.core.store_finalization import Finalizations

pytestmark = pytest.mark.integration


def queued(seconds: float = 60) -> Finalization:
    now = utcnow()
    return Finalization(
        run_id=str(uuid.uuid4()),
        status=FinalizationStatus.QUEUED,
        requested_at=now,
        deadline_at=now + timedelta(seconds=seconds),
    )


def test_one_finalization_is_active_at_a_time(scratch_store: JobStore, scratch_job: str) -> None:
    finalizations = Finalizations(scratch_store)
    first, second = queued(), queued()
    assert finalizations.begin(scratch_job, first, utcnow()) is None
    active = finalizations.begin(scratch_job, second, utcnow())
    assert active is not None and active.run_id == first.run_id
    assert finalizations.get(scratch_job) == first
    assert scratch_store.get_job(scratch_job).finalization == first  # type: ignore[union-attr]


def test_an_ended_or_lost_finalization_is_replaced(scratch_store: JobStore, scratch_job: str) -> None:
    finalizations = Finalizations(scratch_store)
    lost = queued(seconds=-1)  # past its deadline already
    assert finalizations.begin(scratch_job, lost, utcnow()) is None
    replacement = queued()
    assert finalizations.begin(scratch_job, replacement, utcnow()) is None
    # The lost run's late result is dropped; the replacement's is kept.
    late = lost.model_copy(update={"status": FinalizationStatus.SUCCEEDED})
    assert not finalizations.update(scratch_job, late)
    done = replacement.model_copy(update={"status": FinalizationStatus.SUCCEEDED})
    assert finalizations.update(scratch_job, done)
    assert finalizations.get(scratch_job) == done
    # An ended finalization is never rewritten by its run, and a new one may start.
    assert not finalizations.update(scratch_job, replacement)
    assert finalizations.begin(scratch_job, queued(), utcnow()) is None


def test_a_deleted_job_stays_deleted(scratch_store: JobStore) -> None:
    finalizations = Finalizations(scratch_store)
    missing = str(uuid.uuid4())
    assert finalizations.begin(missing, queued(), utcnow()) is None
    assert finalizations.get(missing) is None
    assert not finalizations.update(missing, queued())
    assert not scratch_store.redis.exists(scratch_store.keys.job(missing))
