"""A job's events: a Redis stream per job, read by GET /v1/jobs/{id}/events on whichever API replica.

Each entry has two fields: `type` (one of EVENT_TYPES) and `data` (one-line JSON with `job_id` and `time`
besides the type's own values; the README's Live events lists them). Job status events are
written by the store's own scripts, in the same step as the status change (`JobStore.transition`), so a
terminal status is never without its event; trial and best-trial events are written here, by workers.
Writing an event never fails the work that caused it: a Redis error is logged, not raised.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from service.core.records import TrialRecord, utcnow

log = logging.getLogger(__name__)

JOB_STATUS = "job.status"
TRIAL_STARTED = "trial.started"
TRIAL_EPOCH = "trial.epoch"
TRIAL_FINISHED = "trial.finished"
JOB_BEST = "job.best"
EVENT_TYPES = (JOB_STATUS, TRIAL_STARTED, TRIAL_EPOCH, TRIAL_FINISHED, JOB_BEST)

# Entries a job's stream keeps (about: Redis trims whole nodes). A 1,000-trial job writes two trial events
# per trial and its epochs at most twice a second per running trial; the oldest go first.
MAX_EVENTS = 10_000


def event_data(job_id: str, **values: Any) -> str:
    """An event's `data`: one line of JSON with the job's id and the time, then the type's own values."""
    return json.dumps({"job_id": job_id, "time": utcnow().isoformat(), **values}, separators=(",", ":"))


def emit(store: Any, job_id: str, event_type: str, **values: Any) -> None:
    """Append an event to the job's stream; a failure is logged and swallowed (events are best effort).

    `store` is a `service.core.store.JobStore` (typed loosely: the store imports this module).
    """
    try:
        store.redis.xadd(
            store.keys.job_events(job_id),
            {"type": event_type, "data": event_data(job_id, **values)},
            maxlen=MAX_EVENTS,
            approximate=True,
        )
    except Exception:
        log.warning("could not write the %s event of job %s", event_type, job_id, exc_info=True)


def queue(pipe: Any, store: Any, job_id: str, event_type: str, **values: Any) -> None:
    """`emit`, queued on a pipeline the caller sends (a failure there is logged and swallowed too)."""
    pipe.xadd(
        store.keys.job_events(job_id),
        {"type": event_type, "data": event_data(job_id, **values)},
        maxlen=MAX_EVENTS,
        approximate=True,
    )


def finished_values(trial: TrialRecord) -> dict[str, Any]:
    """A trial.finished event's own values."""
    return {
        "trial_id": trial.id,
        "status": trial.status.value,
        "objective_value": trial.objective_value,
        "stopped_early": trial.stopped_early.model_dump() if trial.stopped_early else None,
    }


def trial_started(store: Any, job_id: str, trial: TrialRecord) -> None:
    emit(store, job_id, TRIAL_STARTED, trial_id=trial.id)


def trial_finished(store: Any, job_id: str, trial: TrialRecord) -> None:
    emit(store, job_id, TRIAL_FINISHED, **finished_values(trial))


def trial_epoch(store: Any, job_id: str, trial_id: str, epoch: int, metrics: dict[str, float | None]) -> None:
    emit(store, job_id, TRIAL_EPOCH, trial_id=trial_id, epoch=epoch, metrics=metrics)


def new_best(store: Any, job_id: str, trial_id: str, objective_value: float) -> None:
    emit(store, job_id, JOB_BEST, trial_id=trial_id, objective_value=objective_value)
