"""Starting a job's run (finalize, recheck) apart from HTTP: the job checked, the run begun in its hash, its
message sent to a worker of the job's queue. What each kind checks and sends is its own service's."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import redis

from service.api import job_service
from service.core import queue
from service.core.errors import Conflict, Unavailable
from service.core.job_runs import Run, RunError, RunStatus
from service.core.records import JobRecord, utcnow
from service.core.spec import queue_for
from service.core.states import JobStatus
from service.core.store import JobStore
from service.core.store_runs import JobRuns

log = logging.getLogger(__name__)


def succeeded_job(store: JobStore, job_id: str, tenant: str, verb: str) -> JobRecord:
    """The job, which must have succeeded. Raises NotFound (another tenant's job too), Conflict
    (`job_not_finished`)."""
    record = job_service.get(store, job_id, tenant)
    if record.status is not JobStatus.SUCCEEDED:
        raise Conflict(
            f"job '{job_id}' is {record.status.value}: only a succeeded job can be {verb} (wait for it to "
            "end)",
            "job_not_finished",
        )
    return record


def start(runs: JobRuns[Run], record: JobRecord, run: Run, send: Callable[[str], None]) -> Run:
    """Store `run` as the job's and `send` its message to the job's queue; a run of its kind that has ended
    is replaced. Raises Conflict (`<noun>_running`) while one is queued or running, Unavailable when the
    queue is unreachable (the run is then stored as failed, `queue_unreachable`)."""
    job_id = record.id
    active = runs.begin(job_id, run, run.requested_at)
    if active is not None:
        raise Conflict(
            f"job '{job_id}' has a {run.noun} {active.status.value} ({active.run_id}); wait for it to end, "
            f"then {run.verb} again",
            f"{run.noun}_running",
        )
    try:
        send(queue_for(record.spec.get("resources", {}).get("accelerator", "any")))
    except (queue.QueueUnreachable, redis.RedisError) as exc:
        log.warning("could not queue the %s of job %s: %s", run.noun, job_id, exc)
        error = RunError(code="queue_unreachable", message=f"the queue was unreachable: {run.verb} again")
        failed = run.model_copy(update={"status": RunStatus.FAILED, "finished_at": utcnow(), "error": error})
        with contextlib.suppress(redis.RedisError):  # else its deadline fails it
            runs.update(job_id, failed)
        raise Unavailable("the queue is unreachable; try again shortly") from exc
    return run
