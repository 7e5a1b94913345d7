"""What the job endpoints do, apart from HTTP: submit, read, list, cancel, delete."""

from __future__ import annotations

import logging
import uuid

import redis
from kombu.exceptions import OperationalError

from service.api.cleanup import remove_job
from service.api.job_parsing import ParsedJob
from service.api.schemas import JobPublic, ObjectivePublic, Progress, TrialPublic
from service.core import lifecycle, queue
from service.core.artifacts import ArtifactStore
from service.core.errors import Conflict, NotFound, Unavailable
from service.core.records import JobRecord, TrialRecord, utcnow
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobDeletion, JobStore

log = logging.getLogger(__name__)


def submit(store: JobStore, job: ParsedJob) -> JobRecord:
    """Store a validated job (`job_parsing.parse_job`'s) as queued, then queue its start.

    Raises Unavailable when Redis cannot take the job (then nothing is kept queued: a stored job whose
    start could not be sent is failed with the reason).
    """
    spec = job.spec
    record = JobRecord(
        id=str(uuid.uuid4()),
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json"),
        created_at=utcnow(),
    )
    try:
        store.create_job(record, job.data)
    except redis.RedisError as exc:
        raise Unavailable(f"the job store is unreachable, nothing was queued: {exc}") from exc
    try:
        queue.send_start_job(record.id, spec.queue)
    except (OperationalError, redis.RedisError) as exc:
        log.exception("could not queue job %s", record.id)
        lifecycle.fail(store, record.id, "enqueue_failed", f"the job could not be queued: {exc}")
        raise Unavailable(f"the job could not be queued, try again: {exc}") from exc
    record.enqueued_at, record.start_sends = utcnow(), 1
    store.set_job_fields(record.id, enqueued_at=record.enqueued_at, start_sends=1)
    # As accepted: a worker may already have started it, which the client sees on its first poll.
    return record


def get(store: JobStore, job_id: str) -> JobRecord:
    """The job; raises NotFound."""
    record = store.get_job(job_id)
    if record is None:
        raise NotFound(f"no job with id '{job_id}'", "job_not_found")
    return record


def cancel(store: JobStore, job_id: str) -> JobRecord:
    """Cancel a queued or running job; cancelling a cancelled job is a no-op. Raises NotFound, Conflict."""
    record = get(store, job_id)
    if not lifecycle.cancel(store, job_id):
        record = get(store, job_id)
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
    return get(store, job_id)


def delete(store: JobStore, artifacts: ArtifactStore, job_id: str) -> None:
    """Delete a finished job, its records and its files. Raises NotFound, or Conflict while it is queued or
    running (cancel it first) or while a cancelled job's trials are still stopping."""
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
    counts = store.trial_status_counts(record.id)
    spec = record.spec
    return JobPublic(
        id=record.id,
        name=spec.get("name"),
        status=record.status,
        task=spec["task"],
        algorithm=spec["tuner"]["algorithm"],
        objective=ObjectivePublic(name=spec["objective"]["name"], direction=spec["objective"]["direction"]),
        progress=Progress(
            trials_total=spec["tuner"]["max_trials"],
            completed=counts[TrialStatus.COMPLETED],
            running=counts[TrialStatus.RUNNING],
            queued=counts[TrialStatus.QUEUED],
            failed=counts[TrialStatus.FAILED],
            cancelled=counts[TrialStatus.CANCELLED],
        ),
        best_trial=record.best,
        error=record.error,
        waiting=record.waiting,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        spec=spec,
    )


def trial_to_public(trial: TrialRecord) -> TrialPublic:
    """The trial as clients see it (with the history the store returned, if any)."""
    return TrialPublic.model_validate(trial.model_dump())
