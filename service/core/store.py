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
    ExecutionRecord,
    JobRecord,
    TrialRecord,
    utcnow,
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

# Stores a trial record only when the stored status may move to the new one (TRIAL_TRANSITIONS), and only
# while its job exists; optionally replaces the trial's history list. Finished trials are never rewritten.
_TRIAL_TRANSITION = """
if redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
local current = redis.call('HGET', KEYS[2], ARGV[1]) or 'new'
if not string.find(',' .. ARGV[2] .. ',', ',' .. current .. ',', 1, true) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if current ~= ARGV[3] then
  redis.call('HINCRBY', KEYS[5], ARGV[3], 1)
  if current ~= 'new' then redis.call('HINCRBY', KEYS[5], current, -1) end
end
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[3])
  for i = 6, #ARGV, 1000 do redis.call('RPUSH', KEYS[3], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
end
return 1
"""

# Appends epochs to a trial's history while the trial is running.
_APPEND_HISTORY = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'running' then return 0 end
for i = 2, #ARGV, 1000 do redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
return 1
"""

# Appends a step's entry to the search log only for the holder of the job's step lock, and only onto the
# entries the step started from: a step whose lock lapsed cannot add to a log a later step wrote. Notes
# the time of the step on the job.
_APPEND_SEARCH_LOG = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[4] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[4]) end
redis.call('HSET', KEYS[3], 'last_step_at', ARGV[3])
return 1
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


class JobStore(Coordination, WorkerRecords):
    """Jobs, trials and search state in Redis. Finished trials are never rewritten by the store's callers."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        super().__init__(client, prefix, binary)
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._release_trials = client.register_script(_RELEASE_TRIALS)
        self._set_job_usage = client.register_script(_SET_JOB_USAGE)
        self._trial_transition = client.register_script(_TRIAL_TRANSITION)
        self._append_history = client.register_script(_APPEND_HISTORY)
        self._append_search_log = client.register_script(_APPEND_SEARCH_LOG)
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
        self._queue_counts(pipe, job_ids)
        replies = pipe.execute()
        views: list[JobView | None] = []
        for i, job_id in enumerate(job_ids):
            record = self._record(job_id, replies[i])
            at = len(job_ids) + 2 * i
            views.append(
                None if record is None else JobView(record, self._counts(job_id, *replies[at : at + 2]))
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
    def transition_trial(
        self,
        job_id: str,
        trial: TrialRecord,
        allowed_from: Iterable[TrialStatus | None],
        replace_history: bool = False,
    ) -> bool:
        """Store `trial` if the stored status is in `allowed_from` (None: no trial yet) and not final.

        With `replace_history`, the trial's stored history becomes the one `trial` holds. Only `lifecycle`
        calls this.
        """
        # A finished trial is never rewritten, whatever the caller allows.
        sources = ",".join(
            "new" if status is None else status.value
            for status in allowed_from
            if status is None or not status.is_final()
        )
        args: list[str] = [trial.id, sources, trial.status.value, _stored_trial(trial)]
        args.append("1" if replace_history else "0")
        if replace_history:
            args += history_entries(trial.executions)
        keys = [
            self.keys.job_trials(job_id),
            self.keys.trial_status(job_id),
            self.keys.trial_history(job_id, trial.id),
            self.keys.job(job_id),
            self.keys.trial_counts(job_id),
        ]
        return int(self._trial_transition(keys=keys, args=args)) == 1

    def append_history(self, job_id: str, trial_id: str, entries: list[str]) -> bool:
        """Append epochs (from `history_entries`) to a running trial's history; False if it is not running."""
        if not entries:
            return True
        keys = [self.keys.trial_status(job_id), self.keys.trial_history(job_id, trial_id)]
        return int(self._append_history(keys=keys, args=[trial_id, *entries])) == 1

    def get_trial(self, job_id: str, trial_id: str) -> TrialRecord | None:
        """A trial without its per-epoch history."""
        raw = self.redis.hget(self.keys.job_trials(job_id), trial_id)
        return TrialRecord.model_validate_json(raw) if raw else None

    def get_trials(self, job_id: str, history: bool = True) -> list[TrialRecord]:
        """Every trial of a job by id, with its per-epoch history unless `history` is False."""
        raw = self.redis.hgetall(self.keys.job_trials(job_id))
        trials = sorted((TrialRecord.model_validate_json(v) for v in raw.values()), key=lambda t: t.id)
        if history and trials:
            pipe = self.redis.pipeline(transaction=False)
            for trial in trials:
                pipe.lrange(self.keys.trial_history(job_id, trial.id), 0, -1)
            for trial, entries in zip(trials, pipe.execute(), strict=True):
                _fill_history(trial, entries)
        return trials

    def trials_recorded(self, job_id: str, trial_ids: list[str]) -> dict[str, bool]:
        """Whether each trial has a record, in one round trip."""
        if not trial_ids:
            return {}
        statuses = self.redis.hmget(self.keys.trial_status(job_id), trial_ids)
        return {trial_id: status is not None for trial_id, status in zip(trial_ids, statuses, strict=True)}

    def trial_status_counts(self, job_id: str) -> Counter[TrialStatus]:
        """How many of the job's trials have each status (statuses none has are left out)."""
        pipe = self.redis.pipeline(transaction=False)
        self._queue_counts(pipe, [job_id])
        return self._counts(job_id, *pipe.execute())

    def _queue_counts(self, pipe: Any, job_ids: list[str]) -> None:
        for job_id in job_ids:
            pipe.hgetall(self.keys.trial_counts(job_id))
            pipe.hlen(self.keys.trial_status(job_id))

    def _counts(self, job_id: str, stored: dict[str, str], trials: int) -> Counter[TrialStatus]:
        counts = Counter({TrialStatus(s): int(n) for s, n in stored.items() if int(n) > 0})
        if counts.total() == trials:
            return counts
        # A job whose trials were stored before the counts were kept: count them one by one.
        return Counter(TrialStatus(s) for s in self.redis.hvals(self.keys.trial_status(job_id)))

    # search state
    def search_log(self, job_id: str, start: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """How many entries the job's search log holds, and those from position `start` on."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.keys.search_log(job_id))
        pipe.lrange(self.keys.search_log(job_id), start, -1)
        length, entries = pipe.execute()
        return int(length), [json.loads(entry) for entry in entries]

    def append_search_log(self, job_id: str, entry: dict[str, Any] | None, owner: str, logged: int) -> bool:
        """Append `entry` (None: nothing, the step changed nothing) to the job's search log and note the time
        of the step, if `owner` still holds the job's step lock and the log holds `logged` entries (the step
        started from all of them); False, writing nothing, otherwise."""
        keys = [self.keys.step_lock(job_id), self.keys.search_log(job_id), self.keys.job(job_id)]
        args = [owner, str(logged), utcnow().isoformat(), json.dumps(entry) if entry is not None else ""]
        return int(self._append_search_log(keys=keys, args=args)) == 1

    def legacy_oracle_state(self, job_id: str) -> dict[str, Any] | None:
        """The whole search state of a job whose search began before the log was kept, if any."""
        raw = self.redis.get(self.keys.legacy_oracle(job_id))
        return json.loads(raw) if raw else None

    # leases


    # worker nodes


def history_entries(executions: list[ExecutionRecord]) -> list[str]:
    """Executions' per-epoch histories as the store keeps them: one JSON `[execution, values]` per epoch."""
    entries: list[str] = []
    for index, execution in enumerate(executions):
        names = list(execution.history)
        epochs = len(execution.history[names[0]]) if names else 0
        for epoch in range(epochs):
            values = {name: execution.history[name][epoch] for name in names}
            entries.append(json.dumps([index, values], separators=(",", ":")))
    return entries


def _fill_history(trial: TrialRecord, entries: list[str]) -> None:
    for entry in entries:
        index, values = json.loads(entry)
        while len(trial.executions) <= index:
            trial.executions.append(ExecutionRecord())
        history = trial.executions[index].history
        for name, value in values.items():
            history.setdefault(name, []).append(value)


def _stored_trial(trial: TrialRecord) -> str:
    """A trial record as stored: its history lives in its own list."""
    executions = [e.model_copy(update={"history": {}}) for e in trial.executions]
    return trial.model_copy(update={"executions": executions}).model_dump_json()


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
