"""The job and trial state machines: every change of a job's or a trial's status goes through here."""

from __future__ import annotations

import logging
from typing import Any

import redis

from service.core import events, fair_share, queue, trial_metrics
from service.core.records import ErrorInfo, TrialRecord, utcnow
from service.core.spec import stored_queue
from service.core.states import JOB_TRANSITIONS, TRIAL_TRANSITIONS, JobStatus, TrialStatus
from service.core.stop_when import StoppedBy
from service.core.store import JobStore

log = logging.getLogger(__name__)

QUOTA_WAIT = "quota_running_jobs"  # the `waiting` code of a job held back by its tenant's running_jobs


def _sources(target: JobStatus) -> list[JobStatus]:
    return [source for source, targets in JOB_TRANSITIONS.items() if target in targets]


def start(store: JobStore, job_id: str, max_running: int | None = None) -> bool:
    """queued -> running while the job's tenant runs fewer than `max_running` jobs; False when the job was
    not queued (already started, or ended) or must wait for its tenant's quota (then `waiting` says so, and
    it is sent again when one of the tenant's jobs ends)."""
    started = store.start(job_id, max_running, started_at=utcnow())
    if started is None:
        store.set_waiting(
            job_id,
            ErrorInfo(
                code=QUOTA_WAIT,
                message=f"waits for one of its tenant's {max_running} running jobs to end (quota "
                "running_jobs); it starts then",
            ),
        )
        return False
    if started:
        store.set_waiting(job_id, None)
    return started


def succeed(store: JobStore, job_id: str, stopped_by: StoppedBy | None = None) -> bool:
    """running -> succeeded; `stopped_by`: the completion criterion that ended its search, if one did."""
    ended = {"stopped_by": stopped_by} if stopped_by is not None else {}
    return _ended(
        store,
        job_id,
        store.transition(
            job_id, _sources(JobStatus.SUCCEEDED), JobStatus.SUCCEEDED, finished_at=utcnow(), **ended
        ),
    )


def fail(store: JobStore, job_id: str, code: str, message: str) -> bool:
    """queued or running -> failed, with a machine-readable code and a sentence."""
    error = ErrorInfo(code=code, message=message)
    moved = store.transition(
        job_id, _sources(JobStatus.FAILED), JobStatus.FAILED, finished_at=utcnow(), error=error
    )
    return _ended(store, job_id, moved)


def cancel(store: JobStore, job_id: str) -> bool:
    """queued or running -> cancelled; False when the job had already ended."""
    moved = store.transition(job_id, _sources(JobStatus.CANCELLED), JobStatus.CANCELLED, finished_at=utcnow())
    return _ended(store, job_id, moved)


# Queued jobs of a tenant sent a start when one of its jobs ends: a start finds the quota full or free.
_ADMIT = 2


def _ended(store: JobStore, job_id: str, moved: bool) -> bool:
    """After a job ended: give back the trials it reserved and never started, and send the start of the
    tenant's oldest queued jobs, which may have waited for its place (quota running_jobs)."""
    if not moved:
        return False
    try:
        store.release_trials(job_id)
        tenant = store.get_tenant(job_id)
        if tenant is not None:
            for waiting in store.oldest_jobs(tenant, JobStatus.QUEUED, _ADMIT):
                fair_share.resend_start(store, waiting)
    except (redis.RedisError, queue.QueueUnreachable):
        # The sweeper re-sends the start of a queued job that waits too long; the day's count is a bound.
        log.warning("after job %s ended, its tenant's queued jobs were not nudged", job_id, exc_info=True)
    _send_webhook(store, job_id)
    return True


def _send_webhook(store: JobStore, job_id: str) -> None:
    """Queue the POST of an ended job to its callback_url, if it has one, on the job's own queue (the
    workers that ran it deliver it)."""
    try:
        record = store.get_job(job_id)
        if record is None or not record.spec.get("callback_url"):
            return
        queue.send_deliver_webhook(job_id, stored_queue(record.spec))
    except (redis.RedisError, queue.QueueUnreachable):
        log.error("the webhook of job %s could not be queued; it is not sent", job_id, exc_info=True)


# Trials: every change of a stored trial goes through here too. Each returns False when the stored trial's
# status does not allow the change (it finished, was cancelled, or is gone with its job).


def _trial_sources(target: TrialStatus) -> list[TrialStatus | None]:
    return [source for source, targets in TRIAL_TRANSITIONS.items() if target in targets]


def queue_trial(store: JobStore, job_id: str, trial: TrialRecord) -> bool:
    """A new trial, queued; False when a trial with its id exists already."""
    return store.transition_trial(job_id, trial.model_copy(update={"status": TrialStatus.QUEUED}), [None])


def start_trial(store: JobStore, job_id: str, trial: TrialRecord) -> bool:
    """queued (or running, when a lost worker's trial is taken over) -> running; its history is reset to
    the one `trial` brings (a checkpoint's, or none)."""
    running = trial.model_copy(update={"status": TrialStatus.RUNNING})
    moved = store.transition_trial(job_id, running, _trial_sources(TrialStatus.RUNNING), replace_history=True)
    if moved:
        pipe = store.redis.pipeline(transaction=False)
        trial_metrics.queue_started(pipe, store)
        events.queue(pipe, store, job_id, events.TRIAL_STARTED, trial_id=running.id)
        _send_counts(pipe)
    return moved


def _send_counts(pipe: Any) -> None:
    """Send a pipeline of trial metrics and events: best effort, as each is on its own."""
    try:
        pipe.execute()
    except redis.RedisError as exc:
        trial_metrics.lost(exc)


def report_progress(store: JobStore, job_id: str, trial: TrialRecord) -> bool:
    """Rewrite a running trial's record (not its history); False once it is no longer running."""
    return store.transition_trial(job_id, trial, [TrialStatus.RUNNING])


def hand_back_trial(store: JobStore, job_id: str, trial: TrialRecord) -> bool:
    """running -> queued, for another worker to continue (this one is shutting down)."""
    queued = trial.model_copy(update={"status": TrialStatus.QUEUED, "started_at": None, "worker": None})
    return store.transition_trial(job_id, queued, [TrialStatus.RUNNING])


def end_trial(store: JobStore, job_id: str, trial: TrialRecord) -> bool:
    """queued or running -> completed or failed, as `trial.status` says."""
    return end_trials(store, job_id, [trial])[0]


def end_trials(store: JobStore, job_id: str, trials: list[TrialRecord]) -> list[bool]:
    """`end_trial` for each of `trials`, in two round trips: whether each moved."""
    for trial in trials:
        if not trial.status.is_final() or trial.status is TrialStatus.CANCELLED:
            raise ValueError(f"end_trial needs a completed or failed trial, not {trial.status.value}")
    moved = [False] * len(trials)
    for status in {trial.status for trial in trials}:
        indexes = [i for i, trial in enumerate(trials) if trial.status is status]
        stored = store.transition_trials(job_id, [trials[i] for i in indexes], _trial_sources(status))
        for index, one in zip(indexes, stored, strict=True):
            moved[index] = one
    if any(moved):
        pipe = store.redis.pipeline(transaction=False)
        for trial in (trial for trial, one in zip(trials, moved, strict=True) if one):
            trial_metrics.queue_ended(pipe, store, trial.status, trial.duration_seconds)
            events.queue(pipe, store, job_id, events.TRIAL_FINISHED, **events.finished_values(trial))
        _send_counts(pipe)
    return moved


def queue_trials(store: JobStore, job_id: str, trials: list[TrialRecord]) -> list[bool]:
    """`queue_trial` for each of `trials`, in one round trip: whether each was new."""
    queued = [trial.model_copy(update={"status": TrialStatus.QUEUED}) for trial in trials]
    return store.transition_trials(job_id, queued, [None])


def cancel_trial(store: JobStore, job_id: str, trial: TrialRecord) -> bool:
    """queued or running -> cancelled (its job was cancelled or ran out of time)."""
    cancelled = trial.cancelled()
    moved = store.transition_trial(job_id, cancelled, _trial_sources(TrialStatus.CANCELLED))
    if moved:
        trial_metrics.record_ended(store, TrialStatus.CANCELLED, None)
        events.trial_finished(store, job_id, cancelled)
    return moved


def cancel_queued_trial(store: JobStore, job_id: str, trial: TrialRecord) -> bool:
    """queued -> cancelled, for a trial no worker has started (its job was cancelled)."""
    cancelled = trial.cancelled()
    moved = store.transition_trial(job_id, cancelled, [TrialStatus.QUEUED])
    if moved:
        trial_metrics.record_ended(store, TrialStatus.CANCELLED, None)
        events.trial_finished(store, job_id, cancelled)
    return moved
