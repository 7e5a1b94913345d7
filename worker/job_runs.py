"""A job's run (finalize, recheck) on a worker: marked running with a fresh deadline, its work done, and its
outcome stored, every failure as a final `failed` with a code. Only the run the job's record names writes
(`service.core.store_runs`): one replaced by a newer request, or ended already, is dropped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from service.core.job_runs import Run, RunError, RunStatus
from service.core.records import utcnow
from service.core.store_runs import JobRuns
from worker.runtime import release_memory

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """A run's work ends in failure with this code (any other exception fails it with `<noun>_error`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def execute(
    runs: JobRuns[Run], job_id: str, run_id: str, timeout: float, work: Callable[[Run], dict[str, Any]]
) -> None:
    """Run the job's run `run_id` unless it was replaced or has ended: `work` takes the running record and
    returns its new fields (a succeeded status, a result); what it raises fails the run."""
    record = runs.get(job_id)
    if record is None or record.run_id != run_id or record.status.is_final():
        log.info("%s %s of job %s was replaced or has ended; nothing to do", runs.field, run_id, job_id)
        return
    started = utcnow()
    record = record.model_copy(
        update={
            "status": RunStatus.RUNNING,
            "started_at": started,
            "deadline_at": started + timedelta(seconds=timeout),
        }
    )
    if not runs.update(job_id, record):
        return
    try:
        update = work(record)
    except RunFailed as exc:
        log.warning("%s %s of job %s failed: %s", record.noun, run_id, job_id, exc)
        update = {"status": RunStatus.FAILED, "error": RunError(code=exc.code, message=str(exc))}
    except Exception as exc:
        log.exception("%s %s of job %s failed", record.noun, run_id, job_id)
        error = RunError(code=f"{record.verb}_error", message=f"{type(exc).__name__}: {exc}")
        update = {"status": RunStatus.FAILED, "error": error}
    finally:
        release_memory()
    runs.update(job_id, record.model_copy(update={**update, "finished_at": utcnow()}))
