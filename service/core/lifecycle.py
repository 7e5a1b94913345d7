"""The job state machine: every change of a job's status goes through here."""

from __future__ import annotations

from service.core.records import ErrorInfo, utcnow
from service.core.states import JOB_TRANSITIONS, JobStatus
from service.core.store import JobStore


def _sources(target: JobStatus) -> list[JobStatus]:
    return [source for source, targets in JOB_TRANSITIONS.items() if target in targets]


def start(store: JobStore, job_id: str) -> bool:
    """queued -> running; False when the job was not queued (already started, or ended)."""
    return store.transition(job_id, [JobStatus.QUEUED], JobStatus.RUNNING, started_at=utcnow())


def succeed(store: JobStore, job_id: str) -> bool:
    """running -> succeeded."""
    return store.transition(job_id, _sources(JobStatus.SUCCEEDED), JobStatus.SUCCEEDED, finished_at=utcnow())


def fail(store: JobStore, job_id: str, code: str, message: str) -> bool:
    """queued or running -> failed, with a machine-readable code and a sentence."""
    error = ErrorInfo(code=code, message=message)
    return store.transition(
        job_id, _sources(JobStatus.FAILED), JobStatus.FAILED, finished_at=utcnow(), error=error
    )


def cancel(store: JobStore, job_id: str) -> bool:
    """queued or running -> cancelled; False when the job had already ended."""
    return store.transition(job_id, _sources(JobStatus.CANCELLED), JobStatus.CANCELLED, finished_at=utcnow())
