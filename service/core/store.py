"""The Redis job store: the only module that knows Redis key names.

Layout (prefix `ktune` by default):
- `{p}:job:{id}` hash: status, spec (JSON, without data), created_at, enqueued_at, start_sends, started_at,
  finished_at, error (JSON), best (JSON), webhook (JSON: its deliveries)
- `{p}:job:{id}:data` the data as compact arrays (`.npz` bytes, `service.core.data_codec`), read by workers
- `{p}:job:{id}:trials` hash trial id -> trial record (JSON, without per-epoch history);
  `{p}:job:{id}:trial-status` id -> status; `{p}:job:{id}:trial-counts` status -> how many trials have it
  (kept with trial-status, so a job's progress is one small read however many trials it has);
  `{p}:job:{id}:history:{trial}` list of the trial's epochs (JSON `[execution, {metric: value}]`), appended
  as the trial trains
- `{p}:job:{id}:search-log` list of the search algorithm's state: a whole state (JSON), then each step's
  changes (`worker.oracles`); `{p}:job:{id}:oracle` the whole state as a single value, as ktune stored it
  before the log (read once, for a job that was running then)
- `{p}:job:{id}:lock` the owner of the job's search step (renewed while a step runs);
  `{p}:job:{id}:lease:{trial}` a trial's owner;
  `{p}:job:{id}:requeued:{trial}` marks a trial the sweeper has just sent again;
  `{p}:job:{id}:losses:{trial}` counts the workers a trial lost while running;
  `{p}:job:{id}:nudged` marks a stalled job the sweeper has just nudged
- `{p}:job:{id}:events` the job's event stream (`service.core.events`): status changes (written here, with
  the change), trials started and finished, epochs, new bests
- `{p}:queue:{queue}:served-at` when a worker was last seen consuming a Celery queue
- `{p}:worker:{node}:draining` marks a worker node in warm shutdown
- `{p}:worker:{node}:heartbeat` a worker node's latest heartbeat (JSON), gone unless renewed; `{p}:workers`
  the set of nodes that wrote one
- the broker's own lists (kombu's layout, read only): `{queue}` holds a Celery queue's waiting messages, and
  `{queue}\x06\x16{n}` those of priority step n
- `{p}:jobs` and `{p}:jobs:status:{status}` sorted sets of `{created_us:020d}:{id}`, for listing; the same
  per tenant: `{p}:tenant:{tenant}:jobs` and `{p}:tenant:{tenant}:jobs:status:{status}` (what a tenant lists,
  and counts against its quotas of queued and running jobs)
- `{p}:tenant:{tenant}:trials:{yyyy-mm-dd}` the trials the tenant's jobs reserved that UTC day (a job
  reserves its max_trials when submitted and gives back those it never started when it ends)
- `{p}:tenant:{tenant}:usage` hash `job:{id}` / `dataset:{id}` -> bytes the tenant stores in artifacts
- `{p}:cleanup:claim` held by the API replica that runs the periodic cleanup (retention, scratch files);
  `{p}:cleanup:cursor` where its pass over leftover job keys has got to
- `{p}:rate-limit:...` the windows of the job-creation rate limit (`service.api.rate_limit`; the `limits`
  package names the keys under this prefix)

- `{p}:dataset:{id}`, `{p}:dataset:{id}:jobs` and `{p}:datasets`: uploaded data sets
  (`service.core.dataset_store`, which names them from this store's prefix)
- `{p}:apikey:{key_id}`, `{p}:apikeys`, `{p}:tenant:{tenant}:quotas` and `{p}:tenant:{tenant}:webhook-secret`:
  API keys (a hash of each, never the key), tenants' quota overrides and webhook secrets
  (`service.core.api_keys`, named from this store's prefix too)
- `{p}:idempotency:{scope}:{tenant}:{sha256 of the key}`: a tenant's Idempotency-Key and what its request
  created, expiring (`service.core.idempotency`, which names them from this store's prefix)

Every key of a job starts with `{p}:job:{id}` (ids are uuids, so no job's keys match another's name).
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
from kombu.transport.redis import Channel as BrokerChannel

from service.core import events
from service.core.data_plan import DataPlan
from service.core.heartbeats import WorkerHeartbeat
from service.core.records import (
    LEGACY_TENANT,
    BestTrial,
    ErrorInfo,
    ExecutionRecord,
    JobRecord,
    TrialRecord,
    WebhookStatus,
    utcnow,
)
from service.core.states import TERMINAL_JOB_STATES, JobStatus, TrialStatus

cursor_pattern = re.compile(r"^\d{20}:[0-9a-f-]{36}$")

# Stores a new, queued job with its data and index entries, if its tenant's quotas admit it: fewer than
# ARGV[3] queued jobs, and ARGV[4] more trials within the day's ARGV[5] (each '' for no limit), and starts
# its event stream with the queued status (ARGV[7], capped at about ARGV[8] entries). Returns {1}, or
# {0, quota, in use}.
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
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 3, 6 do redis.call('ZADD', KEYS[i], 0, ARGV[1]) end
redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[8], '*', 'type', 'job.status', 'data', ARGV[7])
return {1}
"""

# Moves a job to a new status only when it is in one of the allowed ones, and keeps the indexes (its
# tenant's too) in step. A move to running waits (returns 2) while the tenant runs ARGV[6] jobs already.
# The move's job.status event (data ARGV[7]) goes to the job's stream (KEYS[2]) in the same step.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return -1 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. current .. ',', 1, true) then return 0 end
local own = ARGV[5] .. (redis.call('HGET', KEYS[1], 'tenant') or 'local') .. ':jobs:status:'
if ARGV[6] ~= '' and ARGV[2] == 'running' and redis.call('ZCARD', own .. 'running') >= tonumber(ARGV[6]) then
  return 2
end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
for i = 9, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'type', 'job.status', 'data', ARGV[7])
redis.call('ZREM', ARGV[3] .. current, ARGV[4])
redis.call('ZADD', ARGV[3] .. ARGV[2], 0, ARGV[4])
redis.call('ZREM', own .. current, ARGV[4])
redis.call('ZADD', own .. ARGV[2], 0, ARGV[4])
return 1
"""

# Notes the bytes of a job's artifacts in its tenant's usage, while the job exists.
_SET_JOB_USAGE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local tenant = redis.call('HGET', KEYS[1], 'tenant') or 'local'
redis.call('HSET', ARGV[1] .. tenant .. ':usage', 'job:' .. ARGV[2], ARGV[3])
return 1
"""

# Gives back the trials a finished job reserved but never created, to the day it reserved them on (if that
# day's count is still kept), once: the job's reservation becomes what it used.
_RELEASE_TRIALS = """
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved_trials') or '0')
local used = redis.call('HLEN', KEYS[2])
if reserved <= used then return 0 end
redis.call('HSET', KEYS[1], 'reserved_trials', used)
local day = redis.call('HGET', KEYS[1], 'reserved_day')
local tenant = redis.call('HGET', KEYS[1], 'tenant') or 'local'
if not day then return 0 end
local counter = ARGV[1] .. tenant .. ':trials:' .. day
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

# Counts one more send of a queued job's start, only if no one else has since the count the caller read:
# of several API replicas' sweeps that saw the same stale job, one re-sends it.
_CLAIM_RESEND = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if (redis.call('HGET', KEYS[1], 'start_sends') or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'start_sends', ARGV[2], 'enqueued_at', ARGV[3])
return 1
"""

# Renews a lease only for its owner.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Every key of a job besides its hash: `{job}:{suffix}`, and `{job}:{family}:{trial}` for each trial. A new
# key of a job belongs here (tests/integration/test_retention.py scans the whole keyspace after a delete);
# one that is missing is still removed later by `delete_leftover_keys`, the cleanup's slow net.
_JOB_SUFFIXES = (
    "data",
    "trials",
    "trial-status",
    "trial-counts",
    "search-log",
    "oracle",
    "lock",
    "nudged",
    "events",
)
_TRIAL_FAMILIES = ("lease", "requeued", "losses", "history")

# Deletes a finished job whose trials no worker holds, with every key of its layout and its index entries,
# in one step: a reader finds either the whole job or none of it. Keys are named here from the trial ids,
# so a key written a moment before is not missed. -1: no such job, 0: not finished, 2: a trial is held.
_DELETE = """
local job = KEYS[1]
local status = redis.call('HGET', job, 'status')
if not status then return -1 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. status .. ',', 1, true) then return 0 end
local tenant = ARGV[7] .. (redis.call('HGET', job, 'tenant') or 'local')
local trials = redis.call('HKEYS', job .. ':trial-status')
for _, trial in ipairs(redis.call('HKEYS', job .. ':trials')) do table.insert(trials, trial) end
for _, trial in ipairs(trials) do
  if redis.call('EXISTS', job .. ':lease:' .. trial) == 1 then return 2 end
end
local keys = {job}
for suffix in string.gmatch(ARGV[5], '[^,]+') do table.insert(keys, job .. ':' .. suffix) end
for family in string.gmatch(ARGV[6], '[^,]+') do
  for _, trial in ipairs(trials) do table.insert(keys, job .. ':' .. family .. ':' .. trial) end
end
for i = 1, #keys, 1000 do redis.call('UNLINK', unpack(keys, i, math.min(i + 999, #keys))) end
redis.call('ZREM', ARGV[2], ARGV[4])
redis.call('ZREM', ARGV[3] .. status, ARGV[4])
redis.call('ZREM', tenant .. ':jobs', ARGV[4])
redis.call('ZREM', tenant .. ':jobs:status:' .. status, ARGV[4])
redis.call('HDEL', tenant .. ':usage', 'job:' .. ARGV[8])
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


class InvalidCursor(ValueError):
    """A listing cursor that this store did not hand out."""


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


class JobStore:
    """Jobs, trials and search state in Redis. Finished trials are never rewritten by the store's callers."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        # redis-py types every reply as "T | Awaitable[T]" (sync and async share stubs); this client is sync.
        self.redis: Any = client
        # Replies as bytes, for the job's data; made from `client`'s settings on first use when not given.
        self._binary: Any = binary
        self.prefix = prefix
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._release_trials = client.register_script(_RELEASE_TRIALS)
        self._set_job_usage = client.register_script(_SET_JOB_USAGE)
        self._trial_transition = client.register_script(_TRIAL_TRANSITION)
        self._append_history = client.register_script(_APPEND_HISTORY)
        self._append_search_log = client.register_script(_APPEND_SEARCH_LOG)
        self._set_if_exists = client.register_script(_SET_IF_EXISTS)
        self._claim_resend = client.register_script(_CLAIM_RESEND)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
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

    @property
    def _bytes(self) -> Any:
        if self._binary is None:
            pool = self.redis.connection_pool
            kwargs = {**pool.connection_kwargs, "decode_responses": False}
            self._binary = redis.Redis(
                connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            )
        return self._binary

    # keys
    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def rate_limit_prefix(self) -> str:
        """The prefix under which the `limits` package keeps the job-creation rate limit's windows."""
        return f"{self.prefix}:rate-limit"

    def events_key(self, job_id: str) -> str:
        """The job's event stream (`service.core.events`)."""
        return f"{self._job(job_id)}:events"

    def job_key(self, job_id: str) -> str:
        """The key of a job's hash (for `dataset_store`'s script, which reads job statuses)."""
        return self._job(job_id)

    def _index(self, status: JobStatus | None = None) -> str:
        return f"{self.prefix}:jobs" if status is None else f"{self.prefix}:jobs:status:{status.value}"

    def _tenant(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{tenant}"

    def _tenant_index(self, tenant: str, status: JobStatus | None = None) -> str:
        base = f"{self._tenant(tenant)}:jobs"
        return base if status is None else f"{base}:status:{status.value}"

    @staticmethod
    def _member(created_at: datetime, job_id: str) -> str:
        return index_member(created_at, job_id)

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
            self._job(record.id),
            f"{self._job(record.id)}:data",
            self._index(),
            self._index(record.status),
            self._tenant_index(tenant),
            self._tenant_index(tenant, record.status),
            f"{self._tenant(tenant)}:trials:{day}",
            self.events_key(record.id),
        ]
        args: list[Any] = [
            self._member(record.created_at, record.id),
            data,
            "" if admission.max_queued is None else admission.max_queued,
            admission.trials,
            "" if admission.max_trials_per_day is None else admission.max_trials_per_day,
            _DAY_COUNT_SECONDS,
            events.event_data(record.id, status=record.status.value, error=None),
            events.MAX_EVENTS,
        ]
        for name, value in fields.items():
            args += [name, value]
        reply = self._create(keys=keys, args=args)
        if int(reply[0]) == 0:
            raise OverQuota(str(reply[1]), int(reply[2]))

    def release_trials(self, job_id: str) -> int:
        """Give the trials a finished job reserved and never created back to its day; returns how many."""
        keys = [self._job(job_id), f"{self._job(job_id)}:trial-status"]
        return int(self._release_trials(keys=keys, args=[f"{self.prefix}:tenant:"]))

    def trials_reserved(self, tenant: str, day: str) -> int:
        """The trials the tenant's jobs reserved on a UTC day (YYYY-MM-DD)."""
        return int(self.redis.get(f"{self._tenant(tenant)}:trials:{day}") or 0)

    def tenant_job_counts(self, tenant: str) -> dict[JobStatus, int]:
        """The tenant's queued and running jobs."""
        pipe = self.redis.pipeline(transaction=False)
        active = (JobStatus.QUEUED, JobStatus.RUNNING)
        for status in active:
            pipe.zcard(self._tenant_index(tenant, status))
        return dict(zip(active, (int(n) for n in pipe.execute()), strict=True))

    def jobs_ahead(self, tenant: str, job_id: str) -> int:
        """The tenant's jobs ahead of this one: those running (besides it) and those queued before it."""
        member = self._member_of(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self._tenant_index(tenant, JobStatus.RUNNING))
        pipe.zscore(self._tenant_index(tenant, JobStatus.RUNNING), member or "")
        pipe.zlexcount(self._tenant_index(tenant, JobStatus.QUEUED), "-", f"({member}" if member else "+")
        running, itself, queued_before = pipe.execute()
        return int(running) - (itself is not None) + int(queued_before)

    def oldest_jobs(self, tenant: str, status: JobStatus, count: int) -> list[str]:
        """Ids of the tenant's `count` oldest jobs with `status`."""
        members = self.redis.zrangebylex(self._tenant_index(tenant, status), "-", "+", start=0, num=count)
        return [m.split(":", 1)[1] for m in members]

    def get_tenant(self, job_id: str) -> str | None:
        value = self.redis.hget(self._job(job_id), "tenant")
        return str(value) if value else (LEGACY_TENANT if self.redis.exists(self._job(job_id)) else None)

    # artifact bytes per tenant
    def set_job_usage(self, job_id: str, size: int) -> None:
        """Note the bytes of a job's artifacts against its tenant, unless the job is gone (deleting it
        removed its entry)."""
        self._set_job_usage(keys=[self._job(job_id)], args=[f"{self.prefix}:tenant:", job_id, size])

    def usage(self, tenant: str) -> int:
        """The bytes the tenant stores in artifacts (models, checkpoints, data sets)."""
        return sum(int(v) for v in self.redis.hvals(f"{self._tenant(tenant)}:usage"))

    def get_job(self, job_id: str) -> JobRecord | None:
        return self._record(job_id, self.redis.hgetall(self._job(job_id)))

    def job_views(self, job_ids: list[str]) -> list[JobView | None]:
        """Each job with its trial counts (None for a job that does not exist), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self._job(job_id))
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
            enqueued_at=_optional_time(fields.get("enqueued_at")),
            start_sends=int(fields.get("start_sends", 0)),
            started_at=_optional_time(fields.get("started_at")),
            finished_at=_optional_time(fields.get("finished_at")),
            error=ErrorInfo.model_validate_json(fields["error"]) if fields.get("error") else None,
            best=BestTrial.model_validate_json(fields["best"]) if fields.get("best") else None,
            last_step_at=_optional_time(fields.get("last_step_at")),
            nudges=int(fields.get("nudges", 0)),
            waiting=ErrorInfo.model_validate_json(fields["waiting"]) if fields.get("waiting") else None,
            data=DataPlan.model_validate_json(fields["data"]) if fields.get("data") else None,
            webhook=WebhookStatus.model_validate_json(fields["webhook"]) if fields.get("webhook") else None,
        )

    def get_status(self, job_id: str) -> JobStatus | None:
        value = self.redis.hget(self._job(job_id), "status")
        return JobStatus(value) if value else None

    def get_data(self, job_id: str) -> bytes:
        """The job's stored data (`data_codec.decode` reads it). Raises KeyError."""
        raw = self._bytes.get(f"{self._job(job_id)}:data")
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
            f"{self._index()}:status:",
            record_member,
            f"{self.prefix}:tenant:",
            "" if max_running is None else str(max_running),
            events.event_data(job_id, status=to.value, error=_error_value(fields.get("error"))),
            str(events.MAX_EVENTS),
        ]
        for name, value in _encode(fields).items():
            args += [name, value]
        return int(self._transition(keys=[self._job(job_id), self.events_key(job_id)], args=args))

    def _member_of(self, job_id: str) -> str | None:
        created = self.redis.hget(self._job(job_id), "created_at")
        if created is None:
            return None
        return self._member(datetime.fromisoformat(created), job_id)

    def set_job_fields(self, job_id: str, **fields: Any) -> None:
        """Update non-status fields (enqueued_at, best) of a job that exists; a deleted job stays deleted."""
        args: list[str] = []
        for name, value in _encode(fields).items():
            args += [name, value]
        self._set_if_exists(keys=[self._job(job_id)], args=args)

    def set_waiting(self, job_id: str, waiting: ErrorInfo | None) -> None:
        """Say why a job waits (no worker serves its queue), or clear that."""
        if waiting is None:
            self.redis.hdel(self._job(job_id), "waiting")
        else:
            self.set_job_fields(job_id, waiting=waiting)

    def claim_resend(self, job_id: str, sends: int) -> bool:
        """Note the job's start as sent once more, now, if it is still queued and sent `sends` times (the
        count the caller read): True for exactly one of several callers that read the same count."""
        args = [str(sends), str(sends + 1), utcnow().isoformat()]
        return int(self._claim_resend(keys=[self._job(job_id)], args=args)) == 1

    def claim_nudge(self, job_id: str, seconds: float) -> bool:
        """True at most once per `seconds` for a job, across API replicas: the right to nudge its search."""
        return bool(self.redis.set(f"{self._job(job_id)}:nudged", "1", nx=True, px=int(seconds * 1000)))

    def list_jobs(
        self, tenant: str, status: JobStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[JobView], str | None]:
        """The tenant's jobs newest first, with their trial counts, in two round trips; the cursor is the last
        member of the previous page."""
        if cursor is not None and not cursor_pattern.match(cursor):
            raise InvalidCursor(cursor)
        upper = f"({cursor}" if cursor else "+"
        index = self._tenant_index(tenant, status)
        members = self.redis.zrevrangebylex(index, upper, "-", start=0, num=limit + 1)
        page = members[:limit]
        views = self.job_views([member.split(":", 1)[1] for member in page])
        return [view for view in views if view is not None], (page[-1] if len(members) > limit else None)

    def jobs_with_status(self, status: JobStatus) -> list[str]:
        return [m.split(":", 1)[1] for m in self.redis.zrange(self._index(status), 0, -1)]

    # deletion and retention
    def delete_job(self, job_id: str) -> JobDeletion:
        """Remove a finished job's keys and its index entries at once, unless a worker holds one of its
        trials (a cancelled job's trial still stopping)."""
        member = self._member_of(job_id)
        if member is None:
            return JobDeletion.NOT_FOUND
        args = [
            ",".join(s.value for s in TERMINAL_JOB_STATES),
            self._index(),
            f"{self._index()}:status:",
            member,
            ",".join(_JOB_SUFFIXES),
            ",".join(_TRIAL_FAMILIES),
            f"{self.prefix}:tenant:",
            job_id,
        ]
        return _DELETION_REPLIES[int(self._delete(keys=[self._job(job_id)], args=args))]

    def delete_leftover_keys(self, count: int, min_idle_seconds: float = 60) -> list[str]:
        """Look at about `count` more job keys and delete those whose job is gone; returns them.

        A worker still busy with a job may write a key after the job was deleted, and a key the layout
        above does not list survives `delete_job`: this pass finds both. It goes round the keyspace a
        piece per call (its cursor is kept in Redis), so a call costs the same however many keys there are.
        A key touched in the last `min_idle_seconds` stays, in case its job is being created right now.
        """
        cursor_key = f"{self.prefix}:cleanup:cursor"
        cursor = int(self.redis.get(cursor_key) or 0)
        pattern = _GLOB_SPECIAL.sub(r"\\\1", f"{self.prefix}:job:") + "*"
        cursor, keys = self.redis.scan(cursor, match=pattern, count=count)
        self.redis.set(cursor_key, cursor)
        start = len(f"{self.prefix}:job:")
        owners = {key: key[start:].split(":", 1)[0] for key in keys}
        jobs = sorted(set(owners.values()))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in jobs:
            pipe.exists(self._job(job_id))
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
                members = self.redis.zrangebylex(self._index(status), "-", bound, start=start, num=500)
                if not members:
                    break
                ids = [m.split(":", 1)[1] for m in members]
                yield from ((job_id, end) for job_id, (_, end) in zip(ids, self.job_ends(ids), strict=True))
                start += len(members)

    def job_ends(self, job_ids: list[str]) -> list[tuple[JobStatus | None, datetime | None]]:
        """(status, finished_at) of each of these jobs, (None, None) for an unknown one; one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self._job(job_id), ["status", "finished_at"])
        return [
            (JobStatus(status) if status else None, _optional_time(finished))
            for status, finished in pipe.execute()
        ]

    def holds_trials(self, job_id: str) -> bool:
        """Whether a worker holds a lease on any trial of the job (it may still be writing files)."""
        trials = self.redis.hkeys(f"{self._job(job_id)}:trial-status")
        if not trials:
            return False
        return bool(self.redis.exists(*(f"{self._job(job_id)}:lease:{trial}" for trial in trials)))

    def claim_cleanup(self, owner: str, seconds: float) -> bool:
        """Claim the cleanup for `seconds` (False: another API replica holds it), so replicas take turns."""
        key = f"{self.prefix}:cleanup:claim"
        return bool(self.redis.set(key, owner, nx=True, px=max(1, int(seconds * 1000))))

    def extend_cleanup_claim(self, owner: str, seconds: float) -> None:
        """Let the owner's claim lapse `seconds` from now instead (spacing cleanup rounds)."""
        self._renew(keys=[f"{self.prefix}:cleanup:claim"], args=[owner, max(1, int(seconds * 1000))])

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
            f"{self._job(job_id)}:trials",
            f"{self._job(job_id)}:trial-status",
            self._history(job_id, trial.id),
            self._job(job_id),
            f"{self._job(job_id)}:trial-counts",
        ]
        return int(self._trial_transition(keys=keys, args=args)) == 1

    def append_history(self, job_id: str, trial_id: str, entries: list[str]) -> bool:
        """Append epochs (from `history_entries`) to a running trial's history; False if it is not running."""
        if not entries:
            return True
        keys = [f"{self._job(job_id)}:trial-status", self._history(job_id, trial_id)]
        return int(self._append_history(keys=keys, args=[trial_id, *entries])) == 1

    def _history(self, job_id: str, trial_id: str) -> str:
        return f"{self._job(job_id)}:history:{trial_id}"

    def get_trial(self, job_id: str, trial_id: str) -> TrialRecord | None:
        """A trial without its per-epoch history."""
        raw = self.redis.hget(f"{self._job(job_id)}:trials", trial_id)
        return TrialRecord.model_validate_json(raw) if raw else None

    def get_trials(self, job_id: str, history: bool = True) -> list[TrialRecord]:
        """Every trial of a job by id, with its per-epoch history unless `history` is False."""
        raw = self.redis.hgetall(f"{self._job(job_id)}:trials")
        trials = sorted((TrialRecord.model_validate_json(v) for v in raw.values()), key=lambda t: t.id)
        if history and trials:
            pipe = self.redis.pipeline(transaction=False)
            for trial in trials:
                pipe.lrange(self._history(job_id, trial.id), 0, -1)
            for trial, entries in zip(trials, pipe.execute(), strict=True):
                _fill_history(trial, entries)
        return trials

    def trials_recorded(self, job_id: str, trial_ids: list[str]) -> dict[str, bool]:
        """Whether each trial has a record, in one round trip."""
        if not trial_ids:
            return {}
        statuses = self.redis.hmget(f"{self._job(job_id)}:trial-status", trial_ids)
        return {trial_id: status is not None for trial_id, status in zip(trial_ids, statuses, strict=True)}

    def trial_status_counts(self, job_id: str) -> Counter[TrialStatus]:
        """How many of the job's trials have each status (statuses none has are left out)."""
        pipe = self.redis.pipeline(transaction=False)
        self._queue_counts(pipe, [job_id])
        return self._counts(job_id, *pipe.execute())

    def _queue_counts(self, pipe: Any, job_ids: list[str]) -> None:
        for job_id in job_ids:
            pipe.hgetall(f"{self._job(job_id)}:trial-counts")
            pipe.hlen(f"{self._job(job_id)}:trial-status")

    def _counts(self, job_id: str, stored: dict[str, str], trials: int) -> Counter[TrialStatus]:
        counts = Counter({TrialStatus(s): int(n) for s, n in stored.items() if int(n) > 0})
        if counts.total() == trials:
            return counts
        # A job whose trials were stored before the counts were kept: count them one by one.
        return Counter(TrialStatus(s) for s in self.redis.hvals(f"{self._job(job_id)}:trial-status"))

    # search state
    def search_log(self, job_id: str, start: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """How many entries the job's search log holds, and those from position `start` on."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(f"{self._job(job_id)}:search-log")
        pipe.lrange(f"{self._job(job_id)}:search-log", start, -1)
        length, entries = pipe.execute()
        return int(length), [json.loads(entry) for entry in entries]

    def append_search_log(self, job_id: str, entry: dict[str, Any] | None, owner: str, logged: int) -> bool:
        """Append `entry` (None: nothing, the step changed nothing) to the job's search log and note the time
        of the step, if `owner` still holds the job's step lock and the log holds `logged` entries (the step
        started from all of them); False, writing nothing, otherwise."""
        keys = [f"{self._job(job_id)}:lock", f"{self._job(job_id)}:search-log", self._job(job_id)]
        args = [owner, str(logged), utcnow().isoformat(), json.dumps(entry) if entry is not None else ""]
        return int(self._append_search_log(keys=keys, args=args)) == 1

    def legacy_oracle_state(self, job_id: str) -> dict[str, Any] | None:
        """The whole search state of a job whose search began before the log was kept, if any."""
        raw = self.redis.get(f"{self._job(job_id)}:oracle")
        return json.loads(raw) if raw else None

    def acquire_step_lock(self, job_id: str, owner: str, seconds: float) -> bool:
        """Take the job's search-step lock for `seconds` unless another owner holds it."""
        return self._acquire(f"{self._job(job_id)}:lock", owner, seconds)

    def renew_step_lock(self, job_id: str, owner: str, seconds: float) -> bool:
        return self._renew_key(f"{self._job(job_id)}:lock", owner, seconds)

    def release_step_lock(self, job_id: str, owner: str) -> None:
        self._release(keys=[f"{self._job(job_id)}:lock"], args=[owner])

    def _acquire(self, key: str, owner: str, seconds: float) -> bool:
        return bool(self.redis.set(key, owner, nx=True, px=int(seconds * 1000)))

    def _renew_key(self, key: str, owner: str, seconds: float) -> bool:
        return int(self._renew(keys=[key], args=[owner, int(seconds * 1000)])) == 1

    # leases
    def acquire_lease(self, job_id: str, trial_id: str, owner: str, seconds: float) -> bool:
        return self._acquire(f"{self._job(job_id)}:lease:{trial_id}", owner, seconds)

    def renew_lease(self, job_id: str, trial_id: str, owner: str, seconds: float) -> bool:
        return self._renew_key(f"{self._job(job_id)}:lease:{trial_id}", owner, seconds)

    def release_lease(self, job_id: str, trial_id: str, owner: str) -> None:
        self._release(keys=[f"{self._job(job_id)}:lease:{trial_id}"], args=[owner])

    def claim_requeue(self, job_id: str, trial_id: str, seconds: float) -> bool:
        """True at most once per `seconds` for a trial, so a sweep does not re-send it again and again."""
        key = f"{self._job(job_id)}:requeued:{trial_id}"
        return bool(self.redis.set(key, "1", nx=True, px=int(seconds * 1000)))

    def count_trial_loss(self, job_id: str, trial_id: str) -> int:
        """Note that a running trial's worker was lost; returns how many times that has happened."""
        return int(self.redis.incr(f"{self._job(job_id)}:losses:{trial_id}"))

    def trial_losses(self, job_id: str, trial_id: str) -> int:
        return int(self.redis.get(f"{self._job(job_id)}:losses:{trial_id}") or 0)

    # worker nodes
    def set_draining(self, node: str, draining: bool) -> None:
        """Mark a worker node as shutting down (its trials hand themselves back), or clear the mark."""
        key = f"{self.prefix}:worker:{node}:draining"
        if draining:
            self.redis.set(key, "1", ex=24 * 3600)
        else:
            self.redis.delete(key)

    def is_draining(self, node: str) -> bool:
        return bool(self.redis.exists(f"{self.prefix}:worker:{node}:draining"))

    def put_worker_heartbeat(self, node: str, heartbeat: WorkerHeartbeat, ttl: float) -> None:
        """Store a node's latest heartbeat; it disappears after `ttl` seconds unless written again."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(f"{self.prefix}:worker:{node}:heartbeat", heartbeat.model_dump_json(), px=int(ttl * 1000))
        pipe.sadd(f"{self.prefix}:workers", node)
        pipe.execute()

    def worker_heartbeats(self) -> dict[str, WorkerHeartbeat]:
        """The latest heartbeat of every node whose heartbeat has not expired, by node name."""
        nodes = sorted(self.redis.smembers(f"{self.prefix}:workers"))
        if not nodes:
            return {}
        values = self.redis.mget([f"{self.prefix}:worker:{node}:heartbeat" for node in nodes])
        gone = [node for node, value in zip(nodes, values, strict=True) if value is None]
        if gone:
            # A node whose heartbeat expired is gone; it is added again by its next heartbeat.
            self.redis.srem(f"{self.prefix}:workers", *gone)
        return {
            node: WorkerHeartbeat.model_validate_json(value)
            for node, value in zip(nodes, values, strict=True)
            if value is not None
        }

    def queue_lengths(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in the broker in each of these Celery queues, all priorities counted."""
        lists = {queue: broker_lists(queue) for queue in queues}
        pipe = self.redis.pipeline(transaction=False)
        for keys in lists.values():
            for key in keys:
                pipe.llen(key)
        lengths = iter(pipe.execute())
        return {queue: sum(next(lengths) for _ in keys) for queue, keys in lists.items()}

    def mark_queues_served(self, queues: Iterable[str]) -> None:
        """Note that a worker consumes each of these queues now."""
        now = utcnow().isoformat()
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            pipe.set(f"{self.prefix}:queue:{queue}:served-at", now)
        pipe.execute()

    def queue_served_at(self, queue: str) -> datetime | None:
        """When a worker was last seen consuming `queue`; None if never."""
        return _optional_time(self.redis.get(f"{self.prefix}:queue:{queue}:served-at"))

    def lease_holder(self, job_id: str, trial_id: str) -> str | None:
        value = self.redis.get(f"{self._job(job_id)}:lease:{trial_id}")
        return str(value) if value is not None else None


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


def broker_lists(queue: str) -> list[str]:
    """kombu's Redis lists of a Celery queue, one per priority step; the first is named after the queue."""
    return [f"{queue}{BrokerChannel.sep}{step}" if step else queue for step in BrokerChannel.priority_steps]


def index_member(created_at: datetime, record_id: str) -> str:
    """A record's entry in a listing index: sorting entries sorts records by creation time."""
    return f"{int(created_at.timestamp() * 1_000_000):020d}:{record_id}"


def _error_value(error: Any) -> dict[str, Any] | None:
    return error.model_dump() if isinstance(error, ErrorInfo) else None


def _optional_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    encoded: dict[str, str] = {}
    for name, value in fields.items():
        if isinstance(value, datetime):
            encoded[name] = value.isoformat()
        elif hasattr(value, "model_dump_json"):
            encoded[name] = value.model_dump_json()
        else:
            encoded[name] = str(value)
    return encoded


def _job_fields(record: JobRecord) -> dict[str, str]:
    fields: dict[str, Any] = {
        "tenant": record.tenant,
        "status": record.status.value,
        "spec": json.dumps(record.spec),
        "created_at": record.created_at,
    }
    if record.data is not None:
        fields["data"] = record.data
    return _encode(fields)
