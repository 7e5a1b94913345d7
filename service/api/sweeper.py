"""Keeps every job moving towards a final state.

It re-sends work whose message or worker was lost (a job's start, a queued trial's message, a running trial
whose worker died), nudges a search that stalled with nothing running, and fails a job that no worker can
take (`no_worker`). Every action is claimed in Redis first, so several API replicas never repeat one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from service.core import fair_share, lifecycle
from service.core.records import ErrorInfo, JobRecord, utcnow
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


def jobs_in(store: JobStore, status: JobStatus) -> Iterator[JobRecord]:
    """The jobs with `status`, each read as it is reached; one that has moved on since is left out."""
    for job_id in store.jobs_with_status(status):
        record = store.get_job(job_id)
        if record is not None and record.status is status:
            yield record


def requeue_stale_jobs(store: JobStore, settings: Settings) -> list[str]:
    """Send the start again for queued jobs whose last send is older than their `resend_wait`.

    Starting a job is idempotent in the worker, so a duplicate start does nothing; still, each re-send is
    claimed first, so of several API replicas that see the same stale job one sends it.
    """
    now = utcnow()
    resent: list[str] = []
    for record in jobs_in(store, JobStatus.QUEUED):
        job_id = record.id
        last_send = record.enqueued_at or record.created_at
        if now - last_send < resend_wait(settings.stale_queued_seconds, record.start_sends):
            continue
        if not store.claim_resend(job_id, record.start_sends):
            continue
        fair_share.send_start(store, job_id, record.tenant, _queue_of(record.spec))
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
    for record in jobs_in(store, JobStatus.RUNNING):
        job_id = record.id
        for trial in store.get_trials(job_id, history=False):
            if trial.status is TrialStatus.RUNNING:
                every = stale
            elif trial.status is TrialStatus.QUEUED and trial.created_at < queued_before:
                every = 4 * stale
            else:
                continue
            if store.lease_holder(job_id, trial.id) is None and store.claim_requeue(job_id, trial.id, every):
                if trial.status is TrialStatus.RUNNING:
                    store.count_trial_loss(job_id, trial.id)  # a worker that keeps dying fails the trial
                fair_share.send_trials(store, job_id, [trial.id], _queue_of(record.spec))
                resent.append(f"{job_id}/{trial.id}")
    return resent


def _queue_of(spec: dict[str, Any]) -> str:
    return queue_for(spec["resources"]["accelerator"])


# A search that stalled is restarted this many times before its job fails with search_stalled.
MAX_NUDGES = 3
_ACTIVE = frozenset({TrialStatus.QUEUED, TrialStatus.RUNNING})


def nudge_stalled_jobs(store: JobStore, settings: Settings) -> list[str]:
    """Take a step of each running job that has no queued or running trial and took no step for a while.

    Such a job waits for nothing: its last search step failed on the way (a worker died mid-step, or a
    task gave up retrying). Taking a step again (a start message: starting is idempotent) ends the search or
    hands out trials; after MAX_NUDGES that changed nothing, the job fails with `search_stalled`.
    """
    stale = timedelta(seconds=settings.stale_queued_seconds)
    now = utcnow()
    nudged: list[str] = []
    for record in jobs_in(store, JobStatus.RUNNING):
        job_id = record.id
        if store.trial_status_counts(job_id).keys() & _ACTIVE:
            if record.nudges:
                store.set_job_fields(job_id, nudges=0)  # it moves again
            continue
        last = max(t for t in (record.last_step_at, record.started_at, record.created_at) if t is not None)
        if now - last < stale or not store.claim_nudge(job_id, stale.total_seconds()):
            continue
        if record.nudges >= MAX_NUDGES:
            lifecycle.fail(
                store,
                job_id,
                "search_stalled",
                f"the search stopped handing out trials and did not resume after {MAX_NUDGES} restarts",
            )
            continue
        store.set_job_fields(job_id, nudges=record.nudges + 1)  # the claim makes this sweep the only one
        fair_share.send_start(store, job_id, record.tenant, _queue_of(record.spec))
        nudged.append(job_id)
    return nudged


def fail_unserved_jobs(store: JobStore, settings: Settings) -> list[str]:
    """Fail jobs whose queue no worker has consumed for `no_worker_seconds`; say why while they wait.

    A job waits on its queue while it is queued, or running with trials queued and none running.
    """
    consumed = consumed_queues(store, settings)
    store.mark_queues_served(consumed)
    limit = timedelta(seconds=settings.no_worker_seconds)
    now = utcnow()
    failed: list[str] = []
    for status in (JobStatus.QUEUED, JobStatus.RUNNING):
        for record in jobs_in(store, status):
            job_id = record.id
            name = _queue_of(record.spec)
            if name in consumed or not _waits_on_queue(store, record):
                if record.waiting is not None and record.waiting.code == "no_worker":
                    store.set_waiting(job_id, None)
                continue
            served = store.queue_served_at(name)
            since = max(t for t in (served, record.last_step_at, record.created_at) if t is not None)
            if now - since >= limit:
                message = (
                    f"no worker consumed queue '{name}' for {settings.no_worker_seconds:.0f} s "
                    f"(KTUNE_NO_WORKER_SECONDS); start one (python -m worker -Q {name}) and submit again"
                )
                if lifecycle.fail(store, job_id, "no_worker", message):
                    failed.append(job_id)
            elif record.waiting is None or record.waiting.code != "no_worker":
                deadline = since + limit
                store.set_waiting(
                    job_id,
                    ErrorInfo(
                        code="no_worker",
                        message=f"no worker consumes queue '{name}'; the job fails with no_worker at "
                        f"{deadline.isoformat()} unless one starts",
                    ),
                )
    return failed


def consumed_queues(store: JobStore, settings: Settings) -> set[str]:
    """The queues at least one worker node consumes now, by the nodes' heartbeats."""
    return {
        name
        for heartbeat in store.worker_heartbeats().values()
        if heartbeat.not_consuming(settings.stalled_seconds) is None
        for name in heartbeat.queues
    }


def _waits_on_queue(store: JobStore, record: JobRecord) -> bool:
    if record.status is JobStatus.QUEUED:
        return True
    counts = store.trial_status_counts(record.id)
    return counts[TrialStatus.QUEUED] > 0 and counts[TrialStatus.RUNNING] == 0


def sweep(store: JobStore, settings: Settings) -> list[str]:
    """One sweep; returns what was sent again, nudged or failed."""
    return (
        requeue_stale_jobs(store, settings)
        + requeue_orphaned_trials(store, settings)
        + nudge_stalled_jobs(store, settings)
        + fail_unserved_jobs(store, settings)
    )


async def run_sweeper(store: JobStore, settings: Settings, interval: float) -> None:
    """Sweep forever; errors are logged and the next sweep tries again."""
    while True:
        await asyncio.sleep(interval)
        try:
            resent = await asyncio.to_thread(sweep, store, settings)
            if resent:
                log.warning("re-sent, nudged or failed: %s", resent)
        except Exception:
            log.exception("sweep failed")
