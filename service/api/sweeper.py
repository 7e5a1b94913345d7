"""Re-sends work whose message or worker was lost: a job's start, a queued trial's message, or a
running trial whose worker died."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from service.core import queue
from service.core.records import utcnow
from service.core.settings import Settings
from service.core.spec import queue_for
from service.core.states import JobStatus, TrialStatus
from service.core.store import JobStore

log = logging.getLogger(__name__)


_MAX_RESEND_WAIT_SECONDS = 3600


def resend_wait(stale_seconds: int, sends: int) -> timedelta:
    """How long after its last send a still-queued job is sent again: doubling, at most an hour.

    A job no worker serves yet (a gpu job with no gpu worker) then adds a message an hour, not a minute.
    """
    return timedelta(seconds=min(stale_seconds * 2 ** max(0, sends - 1), _MAX_RESEND_WAIT_SECONDS))


def requeue_stale_jobs(store: JobStore, settings: Settings) -> list[str]:
    """Send the start again for queued jobs whose last send is older than their `resend_wait`.

    Starting a job is idempotent in the worker, so a duplicate start does nothing.
    """
    now = utcnow()
    resent: list[str] = []
    for job_id in store.jobs_with_status(JobStatus.QUEUED):
        record = store.get_job(job_id)
        if record is None or record.status is not JobStatus.QUEUED:
            continue
        last_send = record.enqueued_at or record.created_at
        if now - last_send < resend_wait(settings.stale_queued_seconds, record.start_sends):
            continue
        queue.send_start_job(job_id, _queue_of(record.spec))
        store.set_job_fields(job_id, enqueued_at=utcnow(), start_sends=record.start_sends + 1)
        resent.append(job_id)
    return resent


def requeue_orphaned_trials(store: JobStore, settings: Settings) -> list[str]:
    """Send again each trial no worker holds that should have one by now.

    - running with a lapsed lease: its worker died or stalled. Its original message comes back only after
      Redis' visibility timeout, hours later.
    - queued for longer than stale_queued_seconds with no lease: its message may be lost (a worker died
      between storing the trial and sending it). It may also just wait behind others; then the copy is a
      no-op when it arrives, and a trial is sent again at most once every four stale periods.

    The next run takes the lease first; a late duplicate finds the trial held or finished and does nothing.
    """
    stale = settings.stale_queued_seconds
    queued_before = utcnow() - timedelta(seconds=stale)
    resent: list[str] = []
    for job_id in store.jobs_with_status(JobStatus.RUNNING):
        record = store.get_job(job_id)
        if record is None:
            continue
        for trial in store.get_trials(job_id):
            if trial.status is TrialStatus.RUNNING:
                every = stale
            elif trial.status is TrialStatus.QUEUED and trial.created_at < queued_before:
                every = 4 * stale
            else:
                continue
            if store.lease_holder(job_id, trial.id) is None and store.claim_requeue(job_id, trial.id, every):
                if trial.status is TrialStatus.RUNNING:
                    store.count_trial_loss(job_id, trial.id)  # a worker that keeps dying fails the trial
                queue.send_run_trial(job_id, trial.id, _queue_of(record.spec))
                resent.append(f"{job_id}/{trial.id}")
    return resent


def _queue_of(spec: dict[str, Any]) -> str:
    return queue_for(spec["resources"]["accelerator"])


def sweep(store: JobStore, settings: Settings) -> list[str]:
    """One sweep: stale queued jobs, then orphaned trials; returns what was sent again."""
    return requeue_stale_jobs(store, settings) + requeue_orphaned_trials(store, settings)


async def run_sweeper(store: JobStore, settings: Settings, interval: float) -> None:
    """Sweep forever; errors are logged and the next sweep tries again."""
    while True:
        await asyncio.sleep(interval)
        try:
            resent = await asyncio.to_thread(sweep, store, settings)
            if resent:
                log.warning("re-sent lost work: %s", resent)
        except Exception:
            log.exception("sweep failed")
