"""Data-set records in a real Redis: attaching jobs, and deleting only when no job needs the data set."""

from __future__ import annotations

import time
import uuid

import pytest

from service.core import lifecycle
from service.core.dataset_store import DatasetInUse, DatasetRecord, DatasetStore
from service.core.datasets import DatasetInfo
from service.core.records import LEGACY_TENANT, JobRecord, utcnow
from service.core.states import JobStatus
from service.core.store import JobStore

pytestmark = pytest.mark.integration


def record() -> DatasetRecord:
    info = DatasetInfo(format="csv", rows=3, columns=[], size=10, sha256="0" * 64)
    return DatasetRecord(id=str(uuid.uuid4()), name="d.csv", created_at=utcnow(), info=info)


def stored_job(store: JobStore, status: JobStatus = JobStatus.QUEUED) -> str:
    job = JobRecord(id=str(uuid.uuid4()), status=status, spec={"task": "regression"}, created_at=utcnow())
    store.create_job(job, b"{}")
    return job.id


def test_a_data_set_in_use_by_a_queued_job_is_kept_until_the_job_ends(scratch_store: JobStore) -> None:
    datasets = DatasetStore(scratch_store)
    dataset = record()
    datasets.create(dataset, 10)
    job_id = str(uuid.uuid4())
    assert datasets.attach_job(dataset.id, job_id)
    with pytest.raises(DatasetInUse) as in_use:  # attached, not stored yet: being submitted
        datasets.delete(dataset)
    assert in_use.value.job_id == job_id
    job = JobRecord(id=job_id, status=JobStatus.QUEUED, spec={"task": "regression"}, created_at=utcnow())
    scratch_store.create_job(job, b"{}")
    with pytest.raises(DatasetInUse):
        datasets.delete(dataset)
    assert lifecycle.cancel(scratch_store, job_id)
    assert datasets.delete(dataset)
    assert datasets.get(dataset.id) is None
    assert datasets.page(LEGACY_TENANT, 10)[0] == []
    assert not datasets.attach_job(dataset.id, stored_job(scratch_store)), "no job attaches to a deleted set"
    assert not datasets.delete(dataset)


def test_a_job_attached_long_ago_and_never_stored_does_not_hold_the_data_set(scratch_store: JobStore) -> None:
    datasets = DatasetStore(scratch_store)
    dataset = record()
    datasets.create(dataset, 10)
    key = f"{scratch_store.prefix}:dataset:{dataset.id}:jobs"
    scratch_store.redis.zadd(key, {str(uuid.uuid4()): time.time() - 120})  # a submit that failed
    assert datasets.delete(dataset)


def test_data_sets_are_listed_newest_first_a_page_at_a_time(scratch_store: JobStore) -> None:
    datasets = DatasetStore(scratch_store)
    made = []
    for _ in range(3):
        made.append(record())
        datasets.create(made[-1], 10)
        time.sleep(0.002)
    page, cursor = datasets.page(LEGACY_TENANT, 2)
    assert [d.id for d in page] == [made[2].id, made[1].id] and cursor is not None
    rest, end = datasets.page(LEGACY_TENANT, 2, cursor)
    assert [d.id for d in rest] == [made[0].id] and end is None
