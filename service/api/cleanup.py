"""Deletes what finished jobs no longer need: expired jobs (KTUNE_JOB_RETENTION_DAYS) with their artifacts,
the scratch files of ended jobs, and directories and Redis keys left over from deleted jobs; and the
directories of data sets whose upload never got a record (the API stopped while reading it).

Runs periodically in the API beside the sweeper. With several API replicas, one of them claims each round
(a short Redis key); a job deleted twice is harmless anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from service.core.artifacts import ArtifactStore
from service.core.dataset_store import DatasetStore
from service.core.records import utcnow
from service.core.settings import Settings
from service.core.states import JobStatus
from service.core.store import JobDeletion, JobStore

log = logging.getLogger(__name__)

# Jobs expired per round: a backlog (retention just switched on) is worked off over several rounds, so one
# round never holds the cleanup thread for long.
_EXPIRE_PER_ROUND = 100
# Job keys looked at per round for leftovers of deleted jobs: a bounded slice of the keyspace each time.
_KEYS_PER_ROUND = 5_000
# How long a replica's claim on a round lasts at most, should the round itself hang.
_CLAIM_SECONDS = 600.0
# A data-set directory without a record is an upload in progress until its files are this old.
DATASET_ORPHAN_GRACE = timedelta(hours=1)


@dataclass
class CleanupReport:
    """What one round removed."""

    expired: list[str] = field(default_factory=list)  # jobs deleted after their retention
    scratch: list[str] = field(default_factory=list)  # ended jobs whose checkpoints and candidates went
    orphans: list[str] = field(default_factory=list)  # artifact directories of jobs no longer in Redis
    leftover_keys: list[str] = field(default_factory=list)  # Redis keys of jobs no longer in Redis
    orphan_datasets: list[str] = field(default_factory=list)  # data-set directories with no record

    def __bool__(self) -> bool:
        found = (self.expired, self.scratch, self.orphans, self.leftover_keys, self.orphan_datasets)
        return any(found)


def retention_cutoff(now: datetime, retention_days: float) -> datetime | None:
    """Jobs that ended before this are expired; None when retention is off (0 keeps jobs forever)."""
    if retention_days <= 0:
        return None
    return now - timedelta(days=retention_days)


def is_expired(finished_at: datetime | None, cutoff: datetime | None) -> bool:
    """Whether a job that ended at `finished_at` is past its retention (a job still going never is)."""
    return cutoff is not None and finished_at is not None and finished_at < cutoff


def scratch_grace(settings: Settings) -> timedelta:
    """How long after a job ends its scratch files are kept: a trial stopping at the cancel may write one
    more checkpoint, and a trial whose worker died holds its lease for up to a lease period."""
    return timedelta(seconds=2 * settings.lease_seconds)


def scratch_due(
    status: JobStatus | None, finished_at: datetime | None, now: datetime, grace: timedelta
) -> bool:
    """Whether an ended job's scratch files may go now (the caller still checks no trial is held)."""
    if status is None or not status.is_final() or finished_at is None:
        return False
    return now - finished_at >= grace


def orphan_due(status: JobStatus | None, modified: float | None, now: datetime, grace: timedelta) -> bool:
    """Whether a job directory with no job in Redis, last changed at `modified`, is left over to delete.

    It is left over from a deletion (a late trial wrote a file after it, or the API stopped between the
    records and the files); the grace spares a directory a worker is writing into right now.
    """
    return status is None and modified is not None and now.timestamp() - modified >= grace.total_seconds()


def remove_job(store: JobStore, artifacts: ArtifactStore, job_id: str) -> JobDeletion:
    """Delete a finished job's records, then its files (records first: readers then see a 404, not a job
    without its files)."""
    outcome = store.delete_job(job_id)
    if outcome is JobDeletion.DELETED:
        artifacts.delete_job(job_id)
    return outcome


def expire_jobs(store: JobStore, artifacts: ArtifactStore, settings: Settings, now: datetime) -> list[str]:
    """Delete up to _EXPIRE_PER_ROUND jobs that ended more than KTUNE_JOB_RETENTION_DAYS ago."""
    cutoff = retention_cutoff(now, settings.job_retention_days)
    if cutoff is None:
        return []
    due: list[str] = []
    for job_id, finished_at in store.finished_jobs_created_before(cutoff):
        if is_expired(finished_at, cutoff):
            due.append(job_id)
            if len(due) >= _EXPIRE_PER_ROUND:
                break
    # A job whose trials are still held is tried again next round.
    return [job_id for job_id in due if remove_job(store, artifacts, job_id) is JobDeletion.DELETED]


def tidy_job_dirs(
    store: JobStore, artifacts: ArtifactStore, settings: Settings, now: datetime
) -> tuple[list[str], list[str]]:
    """Remove the scratch files of ended jobs, and job directories whose job is gone: (scratch, orphans)."""
    grace = scratch_grace(settings)
    job_ids = artifacts.job_ids()
    scratch: list[str] = []
    orphans: list[str] = []
    for job_id, (status, finished_at) in zip(job_ids, store.job_ends(job_ids), strict=True):
        if orphan_due(status, artifacts.last_modified(job_id), now, grace):
            artifacts.delete_job(job_id)
            orphans.append(job_id)
        elif (
            scratch_due(status, finished_at, now, grace)
            and artifacts.has_scratch(job_id)
            and not store.holds_trials(job_id)
        ):
            artifacts.discard_scratch(job_id)
            scratch.append(job_id)
    return scratch, orphans


def tidy_dataset_dirs(datasets: DatasetStore, artifacts: ArtifactStore, now: datetime) -> list[str]:
    """Remove data-set directories that have no record and whose files have not changed for the grace."""
    dataset_ids = artifacts.dataset_ids()
    removed = []
    for dataset_id, exists in zip(dataset_ids, datasets.existing(dataset_ids), strict=True):
        modified = artifacts.dataset_last_modified(dataset_id)
        if not exists and orphan_due(None, modified, now, DATASET_ORPHAN_GRACE):
            artifacts.delete_dataset(dataset_id)
            removed.append(dataset_id)
    return removed


def cleanup(store: JobStore, artifacts: ArtifactStore, settings: Settings) -> CleanupReport:
    """One round: expired jobs first (their scratch goes with them), then scratch, orphans, leftover keys,
    and data-set directories without a record."""
    now = utcnow()
    expired = expire_jobs(store, artifacts, settings, now)
    scratch, orphans = tidy_job_dirs(store, artifacts, settings, now)
    leftover_keys = store.delete_leftover_keys(_KEYS_PER_ROUND, scratch_grace(settings).total_seconds())
    orphan_datasets = tidy_dataset_dirs(DatasetStore(store), artifacts, now)
    return CleanupReport(expired, scratch, orphans, leftover_keys, orphan_datasets)


def claimed_round(store: JobStore, artifacts: ArtifactStore, settings: Settings, interval: float) -> None:
    """Run a round if no other API replica runs one or ran one less than `interval` ago."""
    owner = uuid.uuid4().hex
    if not store.claim_cleanup(owner, _CLAIM_SECONDS):
        return
    begun = time.monotonic()
    try:
        report = cleanup(store, artifacts, settings)
    finally:
        # Held through the round, then until `interval` after its start: one round per interval in all.
        store.extend_cleanup_claim(owner, interval * 0.9 - (time.monotonic() - begun))
    if report:
        log.info(
            "cleanup: expired jobs %s, scratch of %s, leftover directories %s, leftover keys %s, "
            "data-set directories without a record %s",
            report.expired,
            report.scratch,
            report.orphans,
            report.leftover_keys,
            report.orphan_datasets,
        )


async def run_cleanup(store: JobStore, artifacts: ArtifactStore, settings: Settings, interval: float) -> None:
    """A cleanup round every `interval` seconds by one of the API replicas; errors are logged, not raised."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(claimed_round, store, artifacts, settings, interval)
        except Exception:
            log.exception("cleanup failed")
