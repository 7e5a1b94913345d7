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

from typing import Any

import redis

from service.core.store_base import InvalidCursor, cursor_pattern, index_member
from service.core.store_coordination import Coordination
from service.core.store_jobs import JobRecords, JobView
from service.core.store_keys import broker_lists
from service.core.store_pruning import PruningRecords
from service.core.store_retention import JobDeletion, JobRetention
from service.core.store_tenants import Admission, OverQuota, TenantRecords
from service.core.store_trials import TrialRecords, history_entries
from service.core.store_workers import WorkerRecords

__all__ = [
    "Admission",
    "InvalidCursor",
    "JobDeletion",
    "JobStore",
    "JobView",
    "OverQuota",
    "broker_lists",
    "cursor_pattern",
    "history_entries",
    "index_member",
]


class JobStore(
    JobRecords, TenantRecords, JobRetention, TrialRecords, PruningRecords, Coordination, WorkerRecords
):
    """Jobs, trials and search state in Redis. Finished trials are never rewritten by the store's callers."""

    @classmethod
    def from_url(cls, url: str, prefix: str = "ktune") -> JobStore:
        options: dict[str, Any] = {
            "health_check_interval": 15,
            "socket_connect_timeout": 5,
            # A Redis that hangs raises instead of freezing a worker (or its lease thread).
            "socket_timeout": 15,
            "retry_on_timeout": True,
        }
        client = redis.Redis.from_url(url, decode_responses=True, **options)
        return cls(client, prefix, redis.Redis.from_url(url, decode_responses=False, **options))

    def ping(self) -> bool:
        return bool(self.redis.ping())

    def rate_limit_prefix(self) -> str:
        """The prefix under which the `limits` package keeps the job-creation rate limit's windows."""
        return self.keys.rate_limit_prefix
