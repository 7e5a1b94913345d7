"""What the job endpoints do, apart from HTTP: submit (or only validate), read, list, cancel, delete."""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import redis

from service.api import dataset_service
from service.api.admission import job_admission, refused
from service.api.cleanup import remove_job
from service.api.job_parsing import ParsedJob
from service.api.job_view import view_to_public as view_to_public  # re-exported: routes use it here
from service.api.schemas import JobPublic, TrialPublic
from service.core import fair_share, lifecycle, queue
from service.core.api_keys import ApiKeyStore
from service.core.artifacts import ArtifactStore
from service.core.catalog import output_units
from service.core.data_plan import DataPlan
from service.core.dataset_models import DatasetSource
from service.core.dataset_store import DatasetStore
from service.core.dry_run import JobValidation, validation_of
from service.core.errors import Conflict, FieldProblem, InvalidRequest, NotFound, Unavailable
from service.core.lazy_imports import needed_for
from service.core.quotas import Quotas, tenant_quotas
from service.core.records import JobRecord, TrialRecord, utcnow
from service.core.settings import Limits
from service.core.spec import DataShape, JobCreate, SpecError
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobDeletion, JobStore, JobView, OverQuota, StoredJob
from service.core.warm_start import with_seed_trials

if TYPE_CHECKING:
    from service.core.job_data import PreparedDataset

log = logging.getLogger(__name__)


def submit(
    store: JobStore,
    datasets: DatasetStore,
    artifacts: ArtifactStore,
    job: ParsedJob,
    limits: Limits,
    tenant: str,
    keys: ApiKeyStore,
    defaults: Quotas,
) -> JobRecord:
    """Store a validated job (`job_parsing.parse_job`'s) as queued for `tenant`, then queue its start.

    A job on a data set is checked against the data set first (InvalidRequest) and attached to it, so the
    data set cannot be deleted under it. Raises QuotaExceeded when the tenant's quotas (`defaults` with its
    overrides in `keys`) do not admit it, and
    Unavailable when Redis cannot take the job (then nothing is kept queued: a stored job whose start could
    not be sent is failed with the reason).
    """
    spec, job_id = job.spec, str(uuid.uuid4())
    trials = spec.tuner.max_trials
    quotas = defaults
    try:
        spec = with_seed_trials(store, spec, tenant)
        quotas = tenant_quotas(keys, defaults, tenant)
        admission = job_admission(store, quotas, tenant, trials)
        plan, data = _data_of(datasets, artifacts, job, job_id, limits, tenant)
        record = JobRecord(
            id=job_id,
            tenant=tenant,
            status=JobStatus.QUEUED,
            spec=spec.model_dump(mode="json"),
            created_at=utcnow(),
            data=plan,
        )
        store.create_job(record, data, admission)
    except OverQuota as exc:
        raise refused(exc, quotas, tenant, trials) from exc
    except redis.RedisError as exc:
        # Redis' own message (its address, its errors) is for the log, not for clients.
        log.warning("could not store a job: %s", exc)
        raise Unavailable("the job store is unreachable; nothing was queued, try again shortly") from exc
    try:
        fair_share.send_start(store, record.id, tenant, spec.queue)
    except (queue.QueueUnreachable, redis.RedisError) as exc:
        log.exception("could not queue job %s", record.id)
        lifecycle.fail(store, record.id, "enqueue_failed", "the job's start could not be sent to the queue")
        raise Unavailable("the job could not be queued; nothing was kept queued, try again shortly") from exc
    record.enqueued_at, record.start_sends = utcnow(), 1
    store.set_job_fields(record.id, enqueued_at=record.enqueued_at, start_sends=1)
    # As accepted: a worker may already have started it, which the client sees on its first poll.
    return record


def _data_of(
    datasets: DatasetStore,
    artifacts: ArtifactStore,
    job: ParsedJob,
    job_id: str,
    limits: Limits,
    tenant: str,
) -> tuple[DataPlan, bytes]:
    """The job's data plan and stored data; a data set is resolved, checked and attached to the job."""
    if job.dataset_request is None:
        assert job.plan is not None and job.data is not None
        return job.plan, job.data
    prepared, sources = _resolve_datasets(datasets, artifacts, job.dataset_request, limits, tenant)
    for field, used in sources.items():
        if not used.builtin and not datasets.attach_job(used.ref, job_id):
            raise InvalidRequest([FieldProblem(field, f"data set '{used.ref}' was deleted just now")])
    with needed_for("store a job's data"):
        from service.core.data_codec import encode
    return prepared.plan, encode(prepared.plan, None)


def _resolve_datasets(
    datasets: DatasetStore, artifacts: ArtifactStore, request: JobCreate, limits: Limits, tenant: str
) -> tuple[PreparedDataset, dict[str, DatasetSource]]:
    """A data-set job checked against its data sets (InvalidRequest), and those it uses by field."""
    assert request.data.dataset is not None
    source = dataset_service.source(datasets, artifacts, request.data.dataset, "data.dataset", tenant)
    sources = {"data.dataset": source}
    validation = None
    if request.data.validation_dataset is not None:
        validation = dataset_service.source(
            datasets, artifacts, request.data.validation_dataset, "data.validation_dataset", tenant
        )
        sources["data.validation_dataset"] = validation
    with needed_for("read a data set"):
        from service.core.job_data import prepare_dataset
    try:
        prepared = prepare_dataset(request, source, validation, limits)
    except SpecError as exc:
        raise InvalidRequest([FieldProblem(exc.field, exc.message)]) from exc
    return prepared, sources


def validate(
    datasets: DatasetStore,
    artifacts: ArtifactStore,
    job: ParsedJob,
    limits: Limits,
    tenant: str,
    store: JobStore | None = None,
) -> JobValidation:
    """What `submit` would accept `job` as, checked the same way, with nothing stored, attached or queued
    and no quota counted. Raises InvalidRequest as `submit` does for its data set and tuner.warm_start
    (checked against `store`'s jobs)."""
    spec = job.spec
    if store is not None:
        spec = with_seed_trials(store, spec, tenant)
    if job.dataset_request is None:
        assert job.plan is not None
        plan = job.plan
        shape = DataShape(
            rows=plan.split.train_rows + plan.split.validation_rows,
            features=len(plan.features),
            outputs=output_units(spec.task, plan.classes),
        )
    else:
        prepared, _ = _resolve_datasets(datasets, artifacts, job.dataset_request, limits, tenant)
        plan, shape = prepared.plan, prepared.shape
    return validation_of(spec, shape, plan.warnings)


def get(store: JobStore, job_id: str, tenant: str) -> JobRecord:
    """The tenant's job; raises NotFound, for another tenant's job too (its existence is not told)."""
    record = store.get_job(job_id)
    if record is None or record.tenant != tenant:
        raise _not_found(job_id)
    return record


def owned(job: StoredJob | None, job_id: str, tenant: str) -> StoredJob:
    """The stored job, if it is the tenant's; NotFound as `get` (another tenant's job is not told apart from
    a missing one)."""
    if job is None or job.tenant != tenant:
        raise _not_found(job_id)
    return job


def _not_found(job_id: str) -> NotFound:
    return NotFound(f"no job with id '{job_id}'", "job_not_found")


def cancel(store: JobStore, job_id: str, tenant: str) -> JobRecord:
    """Cancel a queued or running job; cancelling a cancelled job is a no-op. Raises NotFound, Conflict."""
    record = get(store, job_id, tenant)
    if not lifecycle.cancel(store, job_id):
        record = get(store, job_id, tenant)
        if record.status is not JobStatus.CANCELLED:
            raise Conflict(
                f"job '{job_id}' has already {record.status.value}; only queued or running jobs can "
                "be cancelled",
                "job_finished",
            )
        return record
    # Trials no worker has picked up yet end here; running ones notice at their next epoch.
    for trial in store.get_trials(job_id, history=False):
        if trial.status is TrialStatus.QUEUED and store.lease_holder(job_id, trial.id) is None:
            lifecycle.cancel_queued_trial(store, job_id, trial)
    return get(store, job_id, tenant)


def delete(store: JobStore, artifacts: ArtifactStore, job_id: str, tenant: str) -> None:
    """Delete a finished job, its records and its files. Raises NotFound, or Conflict while it is queued or
    running (cancel it first) or while a cancelled job's trials are still stopping."""
    get(store, job_id, tenant)
    outcome = remove_job(store, artifacts, job_id)
    if outcome is JobDeletion.NOT_FOUND:
        raise NotFound(f"no job with id '{job_id}'", "job_not_found")
    if outcome is JobDeletion.NOT_FINISHED:
        status = store.get_status(job_id)
        raise Conflict(
            f"job '{job_id}' is {status.value if status else 'not finished'}; cancel it first "
            f"(POST /v1/jobs/{job_id}/cancel), then delete it",
            "job_not_finished",
        )
    if outcome is JobDeletion.TRIALS_HELD:
        raise Conflict(
            f"job '{job_id}' has ended but a worker is still stopping one of its trials; try again in a few "
            "seconds",
            "trials_stopping",
        )


def to_public(store: JobStore, record: JobRecord) -> JobPublic:
    return view_to_public(JobView(record, store.trial_status_counts(record.id)))


def trial_to_public(trial: TrialRecord, history: bool = True) -> TrialPublic:
    """The trial as clients see it; without `history`, its executions leave their histories out."""
    public = TrialPublic.model_validate(trial.model_dump())
    if not history:
        for execution in public.executions:
            execution.history = None
    return public
