"""The Redis job store: jobs, trials, search state, leases and worker records.

`JobStore` is the one object callers use; each part of it lives in a module of its own:
- `store_jobs.JobRecords`: job records, their data and status changes, the listing indexes
- `store_tenants.TenantRecords`: tenants' quota counts, fair-share order and artifact bytes
- `store_retention.JobRetention`: deleting finished jobs and the leftover keys of deleted ones
- `store_trials.TrialRecords`: trial records, statuses and counts, histories, the search log
- `store_pruning.PruningRecords`: the trials' objective values by epoch and rung, for `tuner.pruning`
- `store_coordination.Coordination`: the step lock, trial leases, and the sweeper's and cleanup's claims
- `store_workers.WorkerRecords`: worker heartbeats, draining marks, queue lengths and served marks
What they share is in `store_base`; every key name, and the layout they make, in `store_keys`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis
import redis.asyncio

from service.core.states import JobStatus, TrialStatus
from service.core.store_base import InvalidCursor, cursor_pattern, index_member
from service.core.store_coordination import Coordination
from service.core.store_jobs import JobRecords, JobView, StoredJob
from service.core.store_keys import broker_lists
from service.core.store_pruning import PruningRecords
from service.core.store_retention import JobDeletion, JobRetention
from service.core.store_tenants import Admission, OverQuota, TenantRecords
from service.core.store_trials import TrialRecords, history_entries, queue_trial_counts, trial_counts
from service.core.store_workers import WorkerRecords

__all__ = [
    "Admission",
    "InvalidCursor",
    "JobDeletion",
    "JobStore",
    "JobView",
    "OverQuota",
    "StoredJob",
    "broker_lists",
    "cursor_pattern",
    "history_entries",
    "index_member",
]


CLIENT_OPTIONS: dict[str, Any] = {
    "health_check_interval": 15,
    "socket_connect_timeout": 5,
    # A Redis that hangs raises instead of freezing a worker (or its lease thread, or the API's event loop).
    "socket_timeout": 15,
    "retry_on_timeout": True,
}
"""The settings of every client of the store's Redis, sync or asyncio (besides the URL, which names the
server, database and password)."""


def async_client(url: str) -> Any:
    """An asyncio client of the store's Redis at `url` (str replies), with the sync clients' settings; it
    connects on first use, and must be used from one event loop only (`service.api.async_redis`)."""
    return redis.asyncio.Redis.from_url(url, decode_responses=True, **CLIENT_OPTIONS)


class JobStore(
    JobRecords, TenantRecords, JobRetention, TrialRecords, PruningRecords, Coordination, WorkerRecords
):
    """Jobs, trials and search state in Redis. Finished trials are never rewritten by the store's callers."""

    @classmethod
    def from_url(cls, url: str, prefix: str = "ktune") -> JobStore:
        client = redis.Redis.from_url(url, decode_responses=True, **CLIENT_OPTIONS)
        return cls(client, prefix, redis.Redis.from_url(url, decode_responses=False, **CLIENT_OPTIONS))

    def trial_send_counts(
        self, job_id: str, tenant: str
    ) -> tuple[Counter[TrialStatus], dict[JobStatus, int]]:
        """How many of the job's trials have each status, and the tenant's queued and running jobs, in one
        round trip: what ranking the job's trial messages reads (`fair_share.send_trials`)."""
        pipe = self.redis.pipeline(transaction=False)
        queue_trial_counts(pipe, self.keys, [job_id])
        self.queue_tenant_job_counts(pipe, tenant)
        stored, trials, *jobs = pipe.execute()
        return trial_counts(self.redis, self.keys, job_id, stored, trials), self.tenant_job_counts_from(jobs)

    def ping(self) -> bool:
        return bool(self.redis.ping())

    def rate_limit_prefix(self) -> str:
        """The prefix under which the `limits` package keeps the job-creation rate limit's windows."""
        return self.keys.rate_limit_prefix
