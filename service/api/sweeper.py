"""Re-sends the start of jobs whose start message was lost, so no job stays queued for ever."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from service.core import queue
from service.core.records import utcnow
from service.core.settings import Settings
from service.core.states import JobStatus
from service.core.store import JobStore

log = logging.getLogger(__name__)


def requeue_stale_jobs(store: JobStore, settings: Settings) -> list[str]:
    """Send the start again for queued jobs whose last send is older than stale_queued_seconds.

    Starting a job is idempotent in the worker, so a duplicate start does nothing.
    """
    stale_before = utcnow() - timedelta(seconds=settings.stale_queued_seconds)
    resent: list[str] = []
    for job_id in store.jobs_with_status(JobStatus.QUEUED):
        record = store.get_job(job_id)
        if record is None or record.status is not JobStatus.QUEUED:
            continue
        if (record.enqueued_at or record.created_at) > stale_before:
            continue
        queue.send_start_job(job_id, "gpu" if record.spec["resources"]["accelerator"] == "gpu" else "cpu")
        store.set_job_fields(job_id, enqueued_at=utcnow())
        resent.append(job_id)
    return resent


async def run_sweeper(store: JobStore, settings: Settings, interval: float) -> None:
    """Sweep forever; errors are logged and the next sweep tries again."""
    while True:
        await asyncio.sleep(interval)
        try:
            resent = await asyncio.to_thread(requeue_stale_jobs, store, settings)
            if resent:
                log.warning("re-sent the start of stale queued jobs: %s", resent)
        except Exception:
            log.exception("sweep failed")
