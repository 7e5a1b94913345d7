"""What a job runs on request after its search, by a worker of its queue: its finalization (POST
/v1/jobs/{id}/finalize) and its recheck (POST /v1/jobs/{id}/recheck). Each kind keeps its latest run in the
job (`finalization`, `recheck`), with the same states, deadline and errors, defined here once.

Pure (no TensorFlow, no Redis): the store keeps these records (`service.core.store_runs`), the API starts
them (`service.api.run_requests`) and a worker runs them (`worker.job_runs`).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, TypeVar

from pydantic import BaseModel, Field


class RunStatus(StrEnum):
    QUEUED = "queued"  # sent to a worker of the job's queue
    RUNNING = "running"  # a worker is training
    SUCCEEDED = "succeeded"  # its result is stored
    FAILED = "failed"  # `error` says why; request it again to retry

    def is_final(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED)


class RunError(BaseModel):
    code: str
    message: str


class JobRun(BaseModel):
    """A job's latest run of one kind: its state, times and error; each kind adds its result's fields."""

    # How the messages about a kind of run name it, and the setting of its deadline.
    noun: ClassVar[str] = "run"
    verb: ClassVar[str] = "run it"
    timeout_setting: ClassVar[str] = ""

    run_id: str = Field(description="this run's id; a new request replaces it once it has ended")
    status: RunStatus
    requested_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deadline_at: datetime = Field(description="a run still queued or running then is failed (`worker_lost`)")
    error: RunError | None = None


Run = TypeVar("Run", bound=JobRun)


def current(record: Run, now: datetime) -> Run:
    """`record` as it stands at `now`: one queued or running past its deadline has failed (its worker was
    lost, or none took it)."""
    if record.status.is_final() or now <= record.deadline_at:
        return record
    lost = RunError(
        code="worker_lost",
        message=f"no worker finished this {record.noun} by its deadline ({record.timeout_setting}): its "
        f"worker was lost or none took it; {record.verb} again",
    )
    return record.model_copy(update={"status": RunStatus.FAILED, "finished_at": now, "error": lost})


def current_text(text: str, now: datetime, model: type[JobRun]) -> str:
    """The stored JSON of a `model` run as `current` makes it (the same text when it has not changed)."""
    if '"status":"queued"' not in text and '"status":"running"' not in text:
        return text
    record = model.model_validate_json(text)
    updated = current(record, now)
    return text if updated is record else updated.model_dump_json()
