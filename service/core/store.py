"""The Redis job store: jobs, trials, search state, leases and worker records.

Its key names, and the layout they make, are in `service.core.store_keys`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import redis

from service.core.data_plan import DataPlan
from service.core.records import (
    LEGACY_TENANT,
    BestTrial,
    ErrorInfo,
    JobRecord,
)
from service.core.states import TERMINAL_JOB_STATES, JobStatus, TrialStatus
from service.core.store_base import (
    InvalidCursor,
    cursor_pattern,
    encode_fields,
    index_member,
    optional_time,
)
from service.core.store_coordination import Coordination
from service.core.store_keys import (
    TENANT_JOBS,
    TENANT_STATUS,
    TENANT_TRIALS,
    TENANT_USAGE,
    JobPart,
    TrialPart,
    broker_lists,
)
from service.core.store_trials import TrialRecords, history_entries, queue_trial_counts, trial_counts
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

# Stores a new, queued job with its data and index entries, if its tenant's quotas admit it: fewer than
# ARGV[3] queued jobs, and ARGV[4] more trials within the day's ARGV[5] (each '' for no limit). Returns {1},
# or {0, quota, in use}.
_CREATE = """
if ARGV[3] ~= '' then
  local queued = redis.call('ZCARD', KEYS[6])
  if queued >= tonumber(ARGV[3]) then return {0, 'queued_jobs', queued} end
end
local reserved = tonumber(redis.call('GET', KEYS[7]) or '0')
if ARGV[5] ~= '' and reserved + tonumber(ARGV[4]) > tonumber(ARGV[5]) then
  return {0, 'trials_per_day', reserved}
end
redis.call('INCRBY', KEYS[7], ARGV[4])
redis.call('EXPIRE', KEYS[7], ARGV[6])
redis.call('SET', KEYS[2], ARGV[2])
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 3, 6 do redis.call('ZADD', KEYS[i], 0, ARGV[1]) end
return {1}
"""

# Moves a job to a new status only when it is in one of the allowed ones, and keeps the indexes (its
# tenant's too) in step. A move to running waits (returns 2) while the tenant runs ARGV[6] jobs already.
_TRANSITION = f"""
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return -1 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. current .. ',', 1, true) then return 0 end
local own = ARGV[5] .. (redis.call('HGET', KEYS[1], 'tenant') or {LEGACY_TENANT!r}) .. {TENANT_STATUS!r}
if ARGV[6] ~= '' and ARGV[2] == 'running' and redis.call('ZCARD', own .. 'running') >= tonumber(ARGV[6]) then
  return 2
end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREM', ARGV[3] .. current, ARGV[4])
redis.call('ZADD', ARGV[3] .. ARGV[2], 0, ARGV[4])
redis.call('ZREM', own .. current, ARGV[4])
redis.call('ZADD', own .. ARGV[2], 0, ARGV[4])
return 1
"""

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


# Sets fields of a job hash only while the job exists: a late writer must not bring back a deleted job.
_SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


# Deletes a finished job whose trials no worker holds, with every key of its layout and its index entries,
# in one step: a reader finds either the whole job or none of it. KEYS: the job's hash, its trial statuses,
# its trial records, then its other keys (every `JobPart`); ARGV[7] on: the names of its trial keys without
# the trial id (every `TrialPart`, the lease first), completed here from the trial ids so that a key written
# a moment before is not missed. -1: no such job, 0: not finished, 2: a trial is held.
_DELETE = f"""
local job = KEYS[1]
local status = redis.call('HGET', job, 'status')
if not status then return -1 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. status .. ',', 1, true) then return 0 end
local tenant = ARGV[5] .. (redis.call('HGET', job, 'tenant') or {LEGACY_TENANT!r})
local trials = redis.call('HKEYS', KEYS[2])
for _, trial in ipairs(redis.call('HKEYS', KEYS[3])) do table.insert(trials, trial) end
for _, trial in ipairs(trials) do
  if redis.call('EXISTS', ARGV[7] .. trial) == 1 then return 2 end
end
local keys = {{unpack(KEYS)}}
for i = 7, #ARGV do
  for _, trial in ipairs(trials) do table.insert(keys, ARGV[i] .. trial) end
end
for i = 1, #keys, 1000 do redis.call('UNLINK', unpack(keys, i, math.min(i + 999, #keys))) end
redis.call('ZREM', ARGV[2], ARGV[4])
redis.call('ZREM', ARGV[3] .. status, ARGV[4])
redis.call('ZREM', tenant .. {TENANT_JOBS!r}, ARGV[4])
redis.call('ZREM', tenant .. {TENANT_STATUS!r} .. status, ARGV[4])
redis.call('HDEL', tenant .. {TENANT_USAGE!r}, 'job:' .. ARGV[6])
return 1
"""


_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


class JobDeletion(StrEnum):
    """What `JobStore.delete_job` did."""

    DELETED = "deleted"
    NOT_FOUND = "not_found"
    NOT_FINISHED = "not_finished"  # queued or running: cancel it first
    TRIALS_HELD = "trials_held"  # finished, but a worker still holds one of its trials (stopping)


_DELETION_REPLIES = {
    1: JobDeletion.DELETED,
    -1: JobDeletion.NOT_FOUND,
    0: JobDeletion.NOT_FINISHED,
    2: JobDeletion.TRIALS_HELD,
}


@dataclass(frozen=True)
class JobView:
    """A job as clients read it: its record and how many of its trials have each status."""

    record: JobRecord
    trial_counts: Counter[TrialStatus]


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


_DAY_COUNT_SECONDS = 3 * 24 * 3600  # a day's trial count outlives the day, for jobs that end the next one


class JobStore(TrialRecords, Coordination, WorkerRecords):
    """Jobs, trials and search state in Redis. Finished trials are never rewritten by the store's callers."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        super().__init__(client, prefix, binary)
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._release_trials = client.register_script(_RELEASE_TRIALS)
        self._set_job_usage = client.register_script(_SET_JOB_USAGE)
        self._set_if_exists = client.register_script(_SET_IF_EXISTS)
        self._delete = client.register_script(_DELETE)

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

    # keys
    def rate_limit_prefix(self) -> str:
        """The prefix under which the `limits` package keeps the job-creation rate limit's windows."""
        return self.keys.rate_limit_prefix

    # jobs
    def ping(self) -> bool:
        return bool(self.redis.ping())

    def create_job(self, record: JobRecord, data: bytes, admission: Admission | None = None) -> None:
        """Store a new queued job and its data (`data_codec.encode`'s bytes) and index it; readers see it at
        once. With `admission`, only if the tenant's quotas admit it (else OverQuota, nothing stored); its
        trials are then reserved from the day's count."""
        admission = admission or Admission(trials=0)
        day = record.created_at.strftime("%Y-%m-%d")
        fields = _job_fields(record)
        fields.update(reserved_trials=str(admission.trials), reserved_day=day)
        tenant = record.tenant
        keys = [
            self.keys.job(record.id),
            self.keys.job_data(record.id),
            self.keys.jobs(),
            self.keys.jobs(record.status),
            self.keys.tenant_jobs(tenant),
            self.keys.tenant_jobs(tenant, record.status),
            self.keys.tenant_trials(tenant, day),
        ]
        args: list[Any] = [
            index_member(record.created_at, record.id),
            data,
            "" if admission.max_queued is None else admission.max_queued,
            admission.trials,
            "" if admission.max_trials_per_day is None else admission.max_trials_per_day,
            _DAY_COUNT_SECONDS,
        ]
        for name, value in fields.items():
            args += [name, value]
        reply = self._create(keys=keys, args=args)
        if int(reply[0]) == 0:
            raise OverQuota(str(reply[1]), int(reply[2]))

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
        active = (JobStatus.QUEUED, JobStatus.RUNNING)
        for status in active:
            pipe.zcard(self.keys.tenant_jobs(tenant, status))
        return dict(zip(active, (int(n) for n in pipe.execute()), strict=True))

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

    def get_tenant(self, job_id: str) -> str | None:
        value = self.redis.hget(self.keys.job(job_id), "tenant")
        return str(value) if value else (LEGACY_TENANT if self.redis.exists(self.keys.job(job_id)) else None)

    # artifact bytes per tenant
    def set_job_usage(self, job_id: str, size: int) -> None:
        """Note the bytes of a job's artifacts against its tenant, unless the job is gone (deleting it
        removed its entry)."""
        self._set_job_usage(keys=[self.keys.job(job_id)], args=[self.keys.tenant_prefix, job_id, size])

    def usage(self, tenant: str) -> int:
        """The bytes the tenant stores in artifacts (models, checkpoints, data sets)."""
        return sum(int(v) for v in self.redis.hvals(self.keys.tenant_usage(tenant)))

    def get_job(self, job_id: str) -> JobRecord | None:
        return self._record(job_id, self.redis.hgetall(self.keys.job(job_id)))

    def job_views(self, job_ids: list[str]) -> list[JobView | None]:
        """Each job with its trial counts (None for a job that does not exist), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
        queue_trial_counts(pipe, self.keys, job_ids)
        replies = pipe.execute()
        views: list[JobView | None] = []
        for i, job_id in enumerate(job_ids):
            record = self._record(job_id, replies[i])
            at = len(job_ids) + 2 * i
            views.append(
                None
                if record is None
                else JobView(record, trial_counts(self.redis, self.keys, job_id, *replies[at : at + 2]))
            )
        return views

    @staticmethod
    def _record(job_id: str, fields: dict[str, str]) -> JobRecord | None:
        if "status" not in fields:
            return None
        return JobRecord(
            id=job_id,
            tenant=fields.get("tenant", LEGACY_TENANT),
            status=JobStatus(fields["status"]),
            spec=json.loads(fields["spec"]),
            created_at=datetime.fromisoformat(fields["created_at"]),
            enqueued_at=optional_time(fields.get("enqueued_at")),
            start_sends=int(fields.get("start_sends", 0)),
            started_at=optional_time(fields.get("started_at")),
            finished_at=optional_time(fields.get("finished_at")),
            error=ErrorInfo.model_validate_json(fields["error"]) if fields.get("error") else None,
            best=BestTrial.model_validate_json(fields["best"]) if fields.get("best") else None,
            last_step_at=optional_time(fields.get("last_step_at")),
            nudges=int(fields.get("nudges", 0)),
            waiting=ErrorInfo.model_validate_json(fields["waiting"]) if fields.get("waiting") else None,
            data=DataPlan.model_validate_json(fields["data"]) if fields.get("data") else None,
        )

    def get_status(self, job_id: str) -> JobStatus | None:
        value = self.redis.hget(self.keys.job(job_id), "status")
        return JobStatus(value) if value else None

    def get_data(self, job_id: str) -> bytes:
        """The job's stored data (`data_codec.decode` reads it). Raises KeyError."""
        raw = self._bytes.get(self.keys.job_data(job_id))
        if raw is None:
            raise KeyError(job_id)
        return bytes(raw)

    def transition(
        self, job_id: str, allowed_from: Iterable[JobStatus], to: JobStatus, **fields: Any
    ) -> bool:
        """Set a job's status if it is in `allowed_from`; False otherwise. Only `lifecycle` calls this."""
        return self._move(job_id, allowed_from, to, None, fields) == 1

    def start(self, job_id: str, max_running: int | None, **fields: Any) -> bool | None:
        """queued -> running while the job's tenant runs fewer than `max_running` jobs (None: no limit).

        True when started, False when the job was not queued, None when it must wait for its tenant's quota.
        Only `lifecycle` calls this.
        """
        moved = self._move(job_id, [JobStatus.QUEUED], JobStatus.RUNNING, max_running, fields)
        return None if moved == 2 else moved == 1

    def _move(
        self,
        job_id: str,
        allowed_from: Iterable[JobStatus],
        to: JobStatus,
        max_running: int | None,
        fields: dict[str, Any],
    ) -> int:
        record_member = self._member_of(job_id)
        if record_member is None:
            return 0
        args: list[str] = [
            ",".join(s.value for s in allowed_from),
            to.value,
            self.keys.jobs_status_prefix,
            record_member,
            self.keys.tenant_prefix,
            "" if max_running is None else str(max_running),
        ]
        for name, value in encode_fields(fields).items():
            args += [name, value]
        return int(self._transition(keys=[self.keys.job(job_id)], args=args))

    def set_job_fields(self, job_id: str, **fields: Any) -> None:
        """Update non-status fields (enqueued_at, best) of a job that exists; a deleted job stays deleted."""
        args: list[str] = []
        for name, value in encode_fields(fields).items():
            args += [name, value]
        self._set_if_exists(keys=[self.keys.job(job_id)], args=args)

    def set_waiting(self, job_id: str, waiting: ErrorInfo | None) -> None:
        """Say why a job waits (no worker serves its queue), or clear that."""
        if waiting is None:
            self.redis.hdel(self.keys.job(job_id), "waiting")
        else:
            self.set_job_fields(job_id, waiting=waiting)

    def list_jobs(
        self, tenant: str, status: JobStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[JobView], str | None]:
        """The tenant's jobs newest first, with their trial counts, in two round trips; the cursor is the last
        member of the previous page."""
        if cursor is not None and not cursor_pattern.match(cursor):
            raise InvalidCursor(cursor)
        upper = f"({cursor}" if cursor else "+"
        index = self.keys.tenant_jobs(tenant, status)
        members = self.redis.zrevrangebylex(index, upper, "-", start=0, num=limit + 1)
        page = members[:limit]
        views = self.job_views([member.split(":", 1)[1] for member in page])
        return [view for view in views if view is not None], (page[-1] if len(members) > limit else None)

    def jobs_with_status(self, status: JobStatus) -> list[str]:
        return [m.split(":", 1)[1] for m in self.redis.zrange(self.keys.jobs(status), 0, -1)]

    # deletion and retention
    def delete_job(self, job_id: str) -> JobDeletion:
        """Remove a finished job's keys and its index entries at once, unless a worker holds one of its
        trials (a cancelled job's trial still stopping)."""
        member = self._member_of(job_id)
        if member is None:
            return JobDeletion.NOT_FOUND
        first = (JobPart.TRIAL_STATUS, JobPart.TRIALS)
        keys = [self.keys.job(job_id), *(self.keys.job_part(job_id, part) for part in first)]
        keys += [self.keys.job_part(job_id, part) for part in JobPart if part not in first]
        lease_first = (TrialPart.LEASE, *(part for part in TrialPart if part is not TrialPart.LEASE))
        args = [
            ",".join(s.value for s in TERMINAL_JOB_STATES),
            self.keys.jobs(),
            self.keys.jobs_status_prefix,
            member,
            self.keys.tenant_prefix,
            job_id,
            *(self.keys.trial_part(job_id, part, "") for part in lease_first),
        ]
        return _DELETION_REPLIES[int(self._delete(keys=keys, args=args))]

    def delete_leftover_keys(self, count: int, min_idle_seconds: float = 60) -> list[str]:
        """Look at about `count` more job keys and delete those whose job is gone; returns them.

        A worker still busy with a job may write a key after the job was deleted, and a key the layout
        above does not list survives `delete_job`: this pass finds both. It goes round the keyspace a
        piece per call (its cursor is kept in Redis), so a call costs the same however many keys there are.
        A key touched in the last `min_idle_seconds` stays, in case its job is being created right now.
        """
        cursor_key = self.keys.cleanup_cursor
        cursor = int(self.redis.get(cursor_key) or 0)
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self.keys.job("")) + "*"
        cursor, keys = self.redis.scan(cursor, match=pattern, count=count)
        self.redis.set(cursor_key, cursor)
        start = len(self.keys.job(""))
        owners = {key: key[start:].split(":", 1)[0] for key in keys}
        jobs = sorted(set(owners.values()))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in jobs:
            pipe.exists(self.keys.job(job_id))
        gone = {job_id for job_id, exists in zip(jobs, pipe.execute(), strict=True) if not exists}
        orphans = sorted(key for key, owner in owners.items() if owner in gone)
        pipe = self.redis.pipeline(transaction=False)
        for key in orphans:
            pipe.object("idletime", key)
        idle = pipe.execute(raise_on_error=False)  # an error (a key gone since, an LFU policy): keep it
        leftovers = [
            key
            for key, seconds in zip(orphans, idle, strict=True)
            if isinstance(seconds, int) and seconds >= min_idle_seconds
        ]
        if leftovers:
            self.redis.unlink(*leftovers)
        return leftovers

    def finished_jobs_created_before(self, cutoff: datetime) -> Iterator[tuple[str, datetime | None]]:
        """(id, finished_at) of finished jobs created before `cutoff`, oldest first within each status.

        A job ends after it was created, so only these can have ended before `cutoff`.
        """
        bound = f"({int(cutoff.timestamp() * 1_000_000):020d}"
        for status in sorted(TERMINAL_JOB_STATES):
            start = 0
            while True:
                members = self.redis.zrangebylex(self.keys.jobs(status), "-", bound, start=start, num=500)
                if not members:
                    break
                ids = [m.split(":", 1)[1] for m in members]
                yield from ((job_id, end) for job_id, (_, end) in zip(ids, self.job_ends(ids), strict=True))
                start += len(members)

    def job_ends(self, job_ids: list[str]) -> list[tuple[JobStatus | None, datetime | None]]:
        """(status, finished_at) of each of these jobs, (None, None) for an unknown one; one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), ["status", "finished_at"])
        return [
            (JobStatus(status) if status else None, optional_time(finished))
            for status, finished in pipe.execute()
        ]

    # trials

    # search state

    # leases

    # worker nodes


def _job_fields(record: JobRecord) -> dict[str, str]:
    fields: dict[str, Any] = {
        "tenant": record.tenant,
        "status": record.status.value,
        "spec": json.dumps(record.spec),
        "created_at": record.created_at,
    }
    if record.data is not None:
        fields["data"] = record.data
    return encode_fields(fields)
