"""Tenants in the store: their quotas' counts (queued and running jobs, trials reserved per day), their jobs'
order for fair share, and the bytes they store in artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from service.core.records import LEGACY_TENANT
from service.core.states import JobStatus
from service.core.store_base import StoreBase
from service.core.store_keys import TENANT_TRIALS, TENANT_USAGE

# Notes the bytes of a job's artifacts in its tenant's usage, while the job exists.
_SET_JOB_USAGE = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local tenant = redis.call('HGET', KEYS[1], 'tenant') or {LEGACY_TENANT!r}
redis.call('HSET', ARGV[1] .. tenant .. {TENANT_USAGE!r}, 'job:' .. ARGV[2], ARGV[3])
return 1
"""

# Gives back the trials a finished job reserved but never created, to the day it reserved them on (if that
# day's count is still kept), once: the job's reservation becomes what it used.
_RELEASE_TRIALS = f"""
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved_trials') or '0')
local used = redis.call('HLEN', KEYS[2])
if reserved <= used then return 0 end
redis.call('HSET', KEYS[1], 'reserved_trials', used)
local day = redis.call('HGET', KEYS[1], 'reserved_day')
local tenant = redis.call('HGET', KEYS[1], 'tenant') or {LEGACY_TENANT!r}
if not day then return 0 end
local counter = ARGV[1] .. tenant .. {TENANT_TRIALS!r} .. day
if redis.call('EXISTS', counter) == 0 then return 0 end
local left = redis.call('DECRBY', counter, reserved - used)
if left < 0 then redis.call('SET', counter, 0, 'KEEPTTL') end
return reserved - used
"""


@dataclass(frozen=True)
class Admission:
    """The quotas a new job must fit: its tenant's queued jobs (`max_queued`), and its trials reserved from
    the UTC day's `max_trials_per_day` (None: no limit). Trials are reserved (counted) either way."""

    trials: int
    max_queued: int | None = None
    max_trials_per_day: int | None = None


class OverQuota(Exception):
    """A tenant's quota does not admit the job: `quota` is its name, `used` what the tenant uses of it."""

    def __init__(self, quota: str, used: int) -> None:
        super().__init__(quota, used)
        self.quota = quota
        self.used = used


class TenantRecords(StoreBase):
    """What each tenant uses of its quotas, and its jobs' order."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        super().__init__(client, prefix, binary)
        self._release_trials = client.register_script(_RELEASE_TRIALS)
        self._set_job_usage = client.register_script(_SET_JOB_USAGE)

    def release_trials(self, job_id: str) -> int:
        """Give the trials a finished job reserved and never created back to its day; returns how many."""
        keys = [self.keys.job(job_id), self.keys.trial_status(job_id)]
        return int(self._release_trials(keys=keys, args=[self.keys.tenant_prefix]))

    def trials_reserved(self, tenant: str, day: str) -> int:
        """The trials the tenant's jobs reserved on a UTC day (YYYY-MM-DD)."""
        return int(self.redis.get(self.keys.tenant_trials(tenant, day)) or 0)

    def tenant_job_counts(self, tenant: str) -> dict[JobStatus, int]:
        """The tenant's queued and running jobs."""
        pipe = self.redis.pipeline(transaction=False)
        self.queue_tenant_job_counts(pipe, tenant)
        return self.tenant_job_counts_from(pipe.execute())

    _ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)

    def queue_tenant_job_counts(self, pipe: Any, tenant: str) -> None:
        """Queue on `pipe` what `tenant_job_counts` reads: one reply per active status."""
        for status in self._ACTIVE:
            pipe.zcard(self.keys.tenant_jobs(tenant, status))

    def tenant_job_counts_from(self, replies: list[Any]) -> dict[JobStatus, int]:
        return dict(zip(self._ACTIVE, (int(n) for n in replies), strict=True))

    def job_counts(self) -> dict[JobStatus, int]:
        """How many jobs (every tenant's) have each status, from the status indexes: one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for status in JobStatus:
            pipe.zcard(self.keys.jobs(status))
        return dict(zip(JobStatus, (int(n) for n in pipe.execute()), strict=True))

    def jobs_ahead(self, tenant: str, job_id: str) -> int:
        """The tenant's jobs ahead of this one: those running (besides it) and those queued before it."""
        member = self._member_of(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.tenant_jobs(tenant, JobStatus.RUNNING))
        pipe.zscore(self.keys.tenant_jobs(tenant, JobStatus.RUNNING), member or "")
        pipe.zlexcount(self.keys.tenant_jobs(tenant, JobStatus.QUEUED), "-", f"({member}" if member else "+")
        running, itself, queued_before = pipe.execute()
        return int(running) - (itself is not None) + int(queued_before)

    def oldest_jobs(self, tenant: str, status: JobStatus, count: int) -> list[str]:
        """Ids of the tenant's `count` oldest jobs with `status`."""
        members = self.redis.zrangebylex(self.keys.tenant_jobs(tenant, status), "-", "+", start=0, num=count)
        return [m.split(":", 1)[1] for m in members]

    # artifact bytes per tenant
    def set_job_usage(self, job_id: str, size: int) -> None:
        """Note the bytes of a job's artifacts against its tenant, unless the job is gone (deleting it
        removed its entry)."""
        self._set_job_usage(keys=[self.keys.job(job_id)], args=[self.keys.tenant_prefix, job_id, size])

    def usage(self, tenant: str) -> int:
        """The bytes the tenant stores in artifacts (models, checkpoints, data sets)."""
        return sum(int(v) for v in self.redis.hvals(self.keys.tenant_usage(tenant)))
