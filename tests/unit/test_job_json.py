"""A job's JSON (`service.api.job_json`) is exactly what `JobPublic` serializes to, and is remembered by the
stored text it was rendered from, never by the job's id: a job that changed in any way is rendered again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from service.api import job_json
from service.api.job_view import view_to_public
from service.api.schemas import JobList
from service.core.data_plan import DataPlan
from service.core.records import BestTrial, ErrorInfo, WebhookStatus, utcnow
from service.core.states import JobStatus
from service.core.store import StoredJob

JOB_ID = "8a1f2b3c-0000-4000-8000-000000000001"
CREATED = datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=UTC)


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    job_json.clear_cache()
    yield
    job_json.clear_cache()


def stored(
    status: JobStatus = JobStatus.RUNNING, spec: dict[str, Any] | None = None, **extra: str
) -> StoredJob:
    spec = spec or {
        "name": "ünïcode név",
        "task": "regression",
        "objective": {"name": "val_loss", "direction": "min"},
        "tuner": {"algorithm": "random", "max_trials": 4},
        "optimizer": {"learning_rate": {"min": 1e-05, "max": 0.1, "sampling": "log"}},
    }
    # As the store keeps a job's hash (`store_jobs`): text fields.
    fields = {
        "tenant": "acme",
        "status": status.value,
        "spec": json.dumps(spec),
        "created_at": CREATED.isoformat(),
    }
    fields |= extra
    return StoredJob(JOB_ID, fields, {"completed": "1", "running": "1", "queued": "0"}, 2)


def expected(job: StoredJob) -> str:
    return view_to_public(job.view()).model_dump_json()


def test_a_job_renders_as_jobpublic_serializes_it() -> None:
    best = BestTrial(
        trial_id="00", hyperparameters={"lr": 1e-05}, objective_value=0.25, metrics={"loss": 0.5}
    )
    job = stored(best=best.model_dump_json(), error=ErrorInfo(code="x", message="é").model_dump_json())
    assert job_json.job_json(job) == expected(job)
    body = json.loads(job_json.job_json(job))
    assert body["progress"]["completed"] == 1 and body["best_trial"]["id"] == "00"


def test_a_job_with_a_webhook_and_a_data_plan_renders_as_jobpublic_serializes_it() -> None:
    webhook = WebhookStatus(url='https://example.com/hook?q="x"', delivered=True)
    split = {"method": "validation_split", "fraction": 0.2, "shuffle": True, "stratified": False}
    split |= {"seed": 1, "train_rows": 8, "validation_rows": 2, "checksum": "0" * 64}
    plan = DataPlan.model_validate(
        {"source": "inline", "features": [{"name": "x0", "type": "numeric"}]} | {"split": split}
    )
    job = stored(webhook=webhook.model_dump_json(), data=plan.model_dump_json())
    assert job_json.job_json(job) == expected(job)
    assert json.loads(job_json.job_json(job))["webhook"]["delivered"] is True


def test_jobs_sharing_a_spec_text_render_each_as_its_own() -> None:
    first = stored()
    second = StoredJob(JOB_ID.replace("1", "2"), {**first.fields, "status": "failed"}, {"failed": "2"}, 2)
    assert [job_json.job_json(first), job_json.job_json(second)] == [expected(first), expected(second)]
    assert job_json.job_json(first) == expected(first), "the spec parsed once is not changed by a rendering"


def test_a_page_renders_as_joblist_serializes_it() -> None:
    jobs = [stored(), stored(JobStatus.SUCCEEDED)]
    for cursor in (None, f"{1:020d}:{JOB_ID}"):
        page = JobList(items=[view_to_public(job.view()) for job in jobs], next_cursor=cursor)
        assert job_json.page_json([job_json.job_json(job) for job in jobs], cursor) == page.model_dump_json()
    assert job_json.page_json([], None) == JobList(items=[], next_cursor=None).model_dump_json()


def test_the_same_stored_text_is_rendered_once() -> None:
    first = job_json.job_json(stored())
    assert job_json.job_json(stored()) == first, "the same text, read again (new objects)"
    info = job_json.cache_info()
    assert (info.hits, info.misses) == (1, 1)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda job: stored(JobStatus.SUCCEEDED), id="status"),
        pytest.param(
            lambda job: stored(spec={**json.loads(job.fields["spec"]), "name": "renamed"}), id="spec"
        ),
        pytest.param(
            lambda job: StoredJob(job.id, job.fields, {**job.counts, "completed": "2", "running": "0"}, 2),
            id="counts",
        ),
        pytest.param(
            lambda job: StoredJob(job.id, job.fields, {**job.counts, "queued": "1"}, 3), id="trials"
        ),
        pytest.param(
            lambda job: StoredJob(job.id, {**job.fields, "finished_at": utcnow().isoformat()}, job.counts, 2),
            id="a new field",
        ),
    ],
)
def test_a_changed_job_is_never_answered_from_the_cache(change: Any) -> None:
    before = stored()
    old = job_json.job_json(before)
    after = change(before)
    assert after.id == before.id, "the same job"
    new = job_json.job_json(after)
    assert new != old and new == expected(after)
    assert job_json.job_json(before) == old, "its earlier text still renders as it did"


def test_the_cache_is_bounded() -> None:
    for i in range(job_json.CACHED_JOBS + 10):
        job_json.job_json(stored(spec={"task": "regression", "objective": {"name": "l", "direction": "min"},
                                       "tuner": {"algorithm": "random", "max_trials": i + 1}}))  # fmt: skip
    assert job_json.cache_info().currsize == job_json.CACHED_JOBS


@pytest.mark.parametrize(("field", "extra"), [("finalization", {}), ("recheck", {"top_k": 2, "seeds": 3})])
def test_a_run_past_its_deadline_renders_failed_not_from_the_cache(field: str, extra: dict[str, Any]) -> None:
    from datetime import timedelta

    from service.core.job_runs import RunStatus
    from service.core.store_runs import RUN_FIELDS

    record = RUN_FIELDS[field](
        run_id="r1",
        status=RunStatus.RUNNING,
        requested_at=utcnow(),
        deadline_at=utcnow() + timedelta(hours=1),
        **extra,
    )
    live = stored(JobStatus.SUCCEEDED, **{field: record.model_dump_json()})
    assert json.loads(job_json.job_json(live))[field]["status"] == "running"
    late = record.model_copy(update={"deadline_at": utcnow() - timedelta(seconds=1)})
    lost = stored(JobStatus.SUCCEEDED, **{field: late.model_dump_json()})
    rendered = json.loads(job_json.job_json(lost))[field]
    assert rendered["status"] == "failed"
    assert rendered["error"]["code"] == "worker_lost"
