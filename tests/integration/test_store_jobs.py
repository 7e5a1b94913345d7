"""The store's job records (`service.core.store_jobs`), against a real Redis server: what each operation
returns, stores and refuses. One store on a fresh key prefix per test."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from service.core.data_plan import DataPlan
from service.core.records import LEGACY_TENANT, BestTrial, ErrorInfo, utcnow
from service.core.states import JobStatus, TrialStatus
from service.core.store import InvalidCursor, JobStore
from tests.integration.store_records import job_record, keys_under, stored_job, trial_record

pytestmark = pytest.mark.integration

MISSING = "00000000-0000-4000-8000-000000000000"


def test_a_created_job_reads_back_as_stored_with_its_data_byte_for_byte(scratch_store: JobStore) -> None:
    record = job_record("acme")
    data = bytes(range(256)) * 3  # not text: read back through the binary client
    scratch_store.create_job(record, data)
    stored = scratch_store.get_job(record.id)
    assert stored is not None
    assert (stored.id, stored.tenant, stored.status, stored.spec) == (
        record.id,
        "acme",
        JobStatus.QUEUED,
        record.spec,
    )
    assert stored.created_at == record.created_at
    assert (stored.enqueued_at, stored.started_at, stored.finished_at, stored.error, stored.best) == (
        None,
    ) * 5
    assert (stored.start_sends, stored.nudges, stored.data) == (0, 0, None)
    assert scratch_store.get_data(record.id) == data
    assert scratch_store.get_status(record.id) is JobStatus.QUEUED
    assert scratch_store.get_tenant(record.id) == "acme"


def test_a_job_created_with_a_data_plan_keeps_it(scratch_store: JobStore) -> None:
    record = job_record()
    split = {"method": "validation_split", "fraction": 0.2, "shuffle": True, "stratified": False}
    split |= {"seed": 1, "train_rows": 8, "validation_rows": 2, "checksum": "0" * 64}
    features = [{"name": "x0", "type": "numeric"}]
    plan = DataPlan.model_validate({"source": "inline", "features": features, "split": split})
    record = record.model_copy(update={"data": plan})
    scratch_store.create_job(record, b"x")
    stored = scratch_store.get_job(record.id)
    assert stored is not None and stored.data == plan


def test_reads_of_a_missing_job_find_nothing(scratch_store: JobStore) -> None:
    assert scratch_store.get_job(MISSING) is None
    assert scratch_store.get_status(MISSING) is None
    assert scratch_store.get_tenant(MISSING) is None
    with pytest.raises(KeyError):
        scratch_store.get_data(MISSING)
    assert scratch_store.job_views([MISSING]) == [None]
    assert not keys_under(scratch_store), "reading writes nothing"


def test_a_job_stored_without_a_tenant_belongs_to_the_legacy_tenant(scratch_store: JobStore) -> None:
    job_id = stored_job(scratch_store)
    scratch_store.redis.hdel(scratch_store.keys.job(job_id), "tenant")  # as stored before tenants
    assert scratch_store.get_tenant(job_id) == LEGACY_TENANT
    record = scratch_store.get_job(job_id)
    assert record is not None and record.tenant == LEGACY_TENANT


def test_a_transition_moves_the_status_its_fields_and_every_index_at_once(scratch_store: JobStore) -> None:
    job_id = stored_job(scratch_store, "acme")
    started = utcnow()
    assert scratch_store.transition(job_id, [JobStatus.QUEUED], JobStatus.RUNNING, started_at=started)
    record = scratch_store.get_job(job_id)
    assert record is not None and record.status is JobStatus.RUNNING and record.started_at == started
    assert scratch_store.jobs_with_status(JobStatus.RUNNING) == [job_id]
    assert scratch_store.jobs_with_status(JobStatus.QUEUED) == []
    assert [v.record.id for v in scratch_store.list_jobs("acme", JobStatus.RUNNING, 10, None)[0]] == [job_id]
    assert scratch_store.list_jobs("acme", JobStatus.QUEUED, 10, None) == ([], None)


def test_a_transition_from_a_status_not_allowed_changes_nothing(scratch_store: JobStore) -> None:
    job_id = stored_job(scratch_store)
    error = ErrorInfo(code="x", message="y")
    assert not scratch_store.transition(job_id, [JobStatus.RUNNING], JobStatus.FAILED, error=error)
    record = scratch_store.get_job(job_id)
    assert record is not None and record.status is JobStatus.QUEUED and record.error is None
    assert scratch_store.jobs_with_status(JobStatus.QUEUED) == [job_id]
    assert scratch_store.jobs_with_status(JobStatus.FAILED) == []


def test_a_transition_of_a_missing_job_stores_nothing(scratch_store: JobStore) -> None:
    assert not scratch_store.transition(MISSING, [JobStatus.QUEUED], JobStatus.RUNNING)
    assert scratch_store.start(MISSING, None) is False
    assert not keys_under(scratch_store)


def test_a_job_that_ended_stays_ended_unless_the_caller_allows_its_status(scratch_store: JobStore) -> None:
    job_id = stored_job(scratch_store)
    assert scratch_store.transition(job_id, [JobStatus.QUEUED], JobStatus.CANCELLED)
    assert not scratch_store.transition(job_id, [JobStatus.QUEUED, JobStatus.RUNNING], JobStatus.RUNNING)
    assert not scratch_store.transition(job_id, [JobStatus.QUEUED], JobStatus.CANCELLED), "moved once"
    assert scratch_store.get_status(job_id) is JobStatus.CANCELLED


def test_start_is_true_once_and_waits_while_the_tenant_runs_its_quota(scratch_store: JobStore) -> None:
    first, second = stored_job(scratch_store, "acme"), stored_job(scratch_store, "acme")
    assert scratch_store.start(first, 1) is True
    assert scratch_store.start(first, None) is False, "not queued any more"
    assert scratch_store.start(second, 1) is None, "waits for the tenant's running job"
    assert scratch_store.get_status(second) is JobStatus.QUEUED
    assert scratch_store.start(second, 2) is True
    assert scratch_store.tenant_job_counts("acme") == {JobStatus.QUEUED: 0, JobStatus.RUNNING: 2}


def test_set_job_fields_updates_a_job_that_exists_and_never_brings_one_back(scratch_store: JobStore) -> None:
    job_id = stored_job(scratch_store)
    best = BestTrial(
        trial_id="03", objective_value=0.25, hyperparameters={"units_0": 8}, metrics={"loss": 0.25}
    )
    enqueued = utcnow() - timedelta(seconds=5)
    scratch_store.set_job_fields(job_id, best=best, enqueued_at=enqueued, start_sends=2, nudges=1)
    record = scratch_store.get_job(job_id)
    assert record is not None
    assert (record.best, record.enqueued_at, record.start_sends, record.nudges) == (best, enqueued, 2, 1)
    assert record.status is JobStatus.QUEUED
    scratch_store.set_job_fields(MISSING, nudges=1)
    assert scratch_store.get_job(MISSING) is None
    assert not keys_under(scratch_store, scratch_store.keys.job(MISSING))


def test_waiting_is_set_and_cleared(scratch_store: JobStore) -> None:
    job_id = stored_job(scratch_store)
    waiting = ErrorInfo(code="no_worker", message="no worker consumes queue gpu")
    scratch_store.set_waiting(job_id, waiting)
    assert scratch_store.get_job(job_id).waiting == waiting  # type: ignore[union-attr]
    scratch_store.set_waiting(job_id, None)
    assert scratch_store.get_job(job_id).waiting is None  # type: ignore[union-attr]
    scratch_store.set_waiting(job_id, None)  # clearing twice is fine
    scratch_store.set_waiting(MISSING, waiting)
    assert scratch_store.get_job(MISSING) is None


def test_job_views_keep_the_order_asked_with_none_for_missing_jobs_and_trial_counts(
    scratch_store: JobStore,
) -> None:
    first, second = stored_job(scratch_store), stored_job(scratch_store)
    assert scratch_store.transition_trial(second, trial_record("00"), [None])
    assert scratch_store.transition_trial(second, trial_record("01"), [None])
    views = scratch_store.job_views([second, MISSING, first])
    assert [v.record.id if v else None for v in views] == [second, None, first]
    assert views[0] is not None and views[0].trial_counts == {TrialStatus.QUEUED: 2}
    assert views[2] is not None and views[2].trial_counts == {}
    assert scratch_store.job_views([]) == []


def test_list_jobs_pages_a_tenants_jobs_newest_first_each_once(scratch_store: JobStore) -> None:
    now = utcnow()
    records = [job_record("acme", created_at=now - timedelta(seconds=10 - i)) for i in range(5)]
    for record in records:
        scratch_store.create_job(record, b"x")
    scratch_store.create_job(job_record("globex"), b"x")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = scratch_store.list_jobs("acme", None, 2, cursor)
        assert len(page) <= 2
        seen += [view.record.id for view in page]
        pages += 1
        if cursor is None:
            break
    assert seen == [r.id for r in reversed(records)] and pages == 3
    assert scratch_store.list_jobs("acme", None, 5, None)[1] is None, "no next page when all fit"
    assert scratch_store.list_jobs("nobody", None, 10, None) == ([], None)


def test_list_jobs_filters_by_status(scratch_store: JobStore) -> None:
    queued, running = stored_job(scratch_store), stored_job(scratch_store)
    scratch_store.start(running, None)
    assert [v.record.id for v in scratch_store.list_jobs("acme", JobStatus.QUEUED, 10, None)[0]] == [queued]
    assert [v.record.id for v in scratch_store.list_jobs("acme", JobStatus.RUNNING, 10, None)[0]] == [running]
    assert scratch_store.list_jobs("acme", JobStatus.FAILED, 10, None) == ([], None)


@pytest.mark.parametrize("cursor", ["", "abc", f"{0:020d}:not-a-uuid", f"{0:019d}:{uuid.uuid4()}", "+", "-"])
def test_a_cursor_the_store_did_not_hand_out_is_refused(scratch_store: JobStore, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        scratch_store.list_jobs("acme", None, 10, cursor)


def test_jobs_with_status_lists_every_tenants_jobs_oldest_first(scratch_store: JobStore) -> None:
    now = utcnow()
    older, newer = job_record("b", created_at=now - timedelta(seconds=1)), job_record("a", created_at=now)
    for record in (newer, older):
        scratch_store.create_job(record, b"x")
    assert scratch_store.jobs_with_status(JobStatus.QUEUED) == [older.id, newer.id]
    assert scratch_store.jobs_with_status(JobStatus.SUCCEEDED) == []


def test_stored_jobs_are_the_text_views_are_parsed_from(scratch_store: JobStore) -> None:
    job_id = stored_job(scratch_store, "globex")
    assert scratch_store.transition_trial(job_id, trial_record("00"), [None])
    replies = scratch_store.read(lambda pipe: scratch_store.queue_job_views(pipe, [job_id, MISSING]))
    job, missing = scratch_store.stored_jobs_from([job_id, MISSING], replies)
    assert missing is None and job is not None
    assert (job.id, job.tenant, job.counts, job.trials, job.counted) == (
        job_id,
        "globex",
        {"queued": "1"},
        1,
        True,
    )
    assert job.fields == scratch_store.redis.hgetall(scratch_store.keys.job(job_id)), "unparsed"
    [view] = scratch_store.job_views([job_id])
    assert job.view() == view


def test_a_stored_job_from_before_trial_counts_were_kept_is_counted_from_its_trials(
    scratch_store: JobStore,
) -> None:
    job_id = stored_job(scratch_store)
    for trial_id in ("00", "01"):
        assert scratch_store.transition_trial(job_id, trial_record(trial_id), [None])
    scratch_store.redis.delete(scratch_store.keys.trial_counts(job_id))  # as an older store kept it
    replies = scratch_store.read(lambda pipe: scratch_store.queue_job_views(pipe, [job_id]))
    [job] = scratch_store.stored_jobs_from([job_id], replies)
    assert job is not None and not job.counted
    counted = scratch_store.counted_job(job)
    assert counted.counted and counted.view().trial_counts == {TrialStatus.QUEUED: 2}
    [view] = scratch_store.job_views([job_id])
    assert view is not None and view.trial_counts == counted.view().trial_counts
