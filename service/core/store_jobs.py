"""Jobs in the store: their records and data, their status changes, and the indexes that list them (all
jobs' and each tenant's, by status)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from service.core import events
from service.core.data_plan import DataPlan
from service.core.finalization import Finalization
from service.core.recheck import Recheck
from service.core.records import LEGACY_TENANT, BestTrial, ErrorInfo, JobRecord, WebhookStatus
from service.core.states import JobStatus, TrialStatus
from service.core.stop_when import StoppedBy
from service.core.store_base import (
    InvalidCursor,
    StoreBase,
    cursor_pattern,
    encode_fields,
    index_member,
    optional_time,
)
from service.core.store_keys import TENANT_STATUS, JobPart
from service.core.store_tenants import Admission, OverQuota
from service.core.store_trials import queue_trial_counts

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
_TRANSITION = f"""
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return -1 end
if not string.find(',' .. ARGV[1] .. ',', ',' .. current .. ',', 1, true) then return 0 end
local own = ARGV[5] .. (redis.call('HGET', KEYS[1], 'tenant') or {LEGACY_TENANT!r}) .. {TENANT_STATUS!r}
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

# Sets fields of a job hash only while the job exists: a late writer must not bring back a deleted job.
_SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# A page of a listing index, newest first, with what job_views reads of each job on it: KEYS[1] the index;
# ARGV upper bound (exclusive "(member" or "+"), page size, job key prefix. Returns the page's members (one
# more than the page size when there is a next page), then each job's hash, trial counts and trial total.
_PAGE = f"""
local size = tonumber(ARGV[2])
local members = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[1], '-', 'LIMIT', 0, size + 1)
local reply = {{members}}
for i = 1, math.min(#members, size) do
    local job = ARGV[3] .. string.sub(members[i], string.find(members[i], ':', 1, true) + 1)
    reply[#reply + 1] = redis.call('HGETALL', job)
    reply[#reply + 1] = redis.call('HGETALL', job .. ':{JobPart.TRIAL_COUNTS}')
    reply[#reply + 1] = redis.call('HLEN', job .. ':{JobPart.TRIAL_STATUS}')
end
return reply
"""


@dataclass(frozen=True)
class JobView:
    """A job as clients read it: its record and how many of its trials have each status."""

    record: JobRecord
    trial_counts: Counter[TrialStatus]


@dataclass(frozen=True)
class StoredJob:
    """What a `JobView` is made of, as Redis returned it: the job's hash, its trial counts (status -> count)
    and how many trials it has. Text, not yet parsed: a rendering of the job can be remembered by it."""

    id: str
    fields: dict[str, str]
    counts: dict[str, str]
    trials: int

    @property
    def tenant(self) -> str:
        return self.fields.get("tenant", LEGACY_TENANT)

    @property
    def counted(self) -> bool:
        """Whether the counts cover every trial: false for a job whose trials were stored before the counts
        were kept, which `recounted` counts from its trials' statuses."""
        return sum(n for n in map(int, self.counts.values()) if n > 0) == self.trials

    def recounted(self, statuses: list[str]) -> StoredJob:
        """This job with its counts made from its trials' statuses (the values of its trial-status hash)."""
        counts = Counter(statuses)
        return StoredJob(self.id, self.fields, {s: str(n) for s, n in counts.items()}, len(statuses))

    def view(self, spec: dict[str, Any] | None = None) -> JobView:
        """The job parsed (with `spec`, its spec as parsed already); its counts must cover every trial
        (`counted`)."""
        record = JobRecords.record_of(self.id, self.fields, spec)
        assert record is not None, "a stored job has a status"
        counts = Counter({TrialStatus(s): int(n) for s, n in self.counts.items() if int(n) > 0})
        return JobView(record, counts)


_DAY_COUNT_SECONDS = 3 * 24 * 3600  # a day's trial count outlives the day, for jobs that end the next one


class JobRecords(StoreBase):
    """Jobs' records, data and statuses. Only `lifecycle` changes a job's status."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        super().__init__(client, prefix, binary)
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._set_if_exists = client.register_script(_SET_IF_EXISTS)
        self._page = client.register_script(_PAGE)
        self._read_scripts.append(self._page)

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
            self.keys.job_events(record.id),
        ]
        args: list[Any] = [
            index_member(record.created_at, record.id),
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

    def get_job(self, job_id: str) -> JobRecord | None:
        return self.record_of(job_id, self.redis.hgetall(self.keys.job(job_id)))

    def job_views(self, job_ids: list[str]) -> list[JobView | None]:
        """Each job with its trial counts (None for a job that does not exist), in one round trip."""
        return self.job_views_from(job_ids, self.read(lambda pipe: self.queue_job_views(pipe, job_ids)))

    def queue_job_views(self, pipe: Any, job_ids: list[str]) -> None:
        """Queue on `pipe` the reads `job_views_from` turns into views (three replies a job), so that they can
        share a round trip."""
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
            queue_trial_counts(pipe, self.keys, [job_id])

    def job_views_from(self, job_ids: list[str], replies: list[Any]) -> list[JobView | None]:
        """The views of `job_ids` from the replies of the reads `queue_job_views` queued, in that order."""
        return [None if job is None else self._view(job) for job in self.stored_jobs_from(job_ids, replies)]

    @staticmethod
    def stored_jobs_from(job_ids: list[str], replies: list[Any]) -> list[StoredJob | None]:
        """`job_views_from`, unparsed: each job as stored (None for a job that does not exist)."""
        jobs: list[StoredJob | None] = []
        for i, job_id in enumerate(job_ids):
            fields, counts, trials = replies[3 * i : 3 * i + 3]
            jobs.append(StoredJob(job_id, fields, counts, int(trials)) if "status" in fields else None)
        return jobs

    def _view(self, job: StoredJob) -> JobView:
        if not job.counted:
            job = job.recounted(self.redis.hvals(self.keys.trial_status(job.id)))
        return job.view()

    def counted_job(self, job: StoredJob) -> StoredJob:
        """`job` with counts that cover every trial, read when it needs them (`StoredJob.counted`)."""
        if job.counted:
            return job
        return job.recounted(self.redis.hvals(self.keys.trial_status(job.id)))

    @staticmethod
    def record_of(
        job_id: str, fields: dict[str, str], spec: dict[str, Any] | None = None
    ) -> JobRecord | None:
        """The record a job's hash holds; None when there is no job (no status). `spec`: the stored spec,
        parsed already."""
        if "status" not in fields:
            return None
        return JobRecord(
            id=job_id,
            tenant=fields.get("tenant", LEGACY_TENANT),
            status=JobStatus(fields["status"]),
            spec=json.loads(fields["spec"]) if spec is None else spec,
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
            webhook=WebhookStatus.model_validate_json(fields["webhook"]) if fields.get("webhook") else None,
            stopped_by=(
                StoppedBy.model_validate_json(fields["stopped_by"]) if fields.get("stopped_by") else None
            ),
            finalization=(
                Finalization.model_validate_json(fields["finalization"])
                if fields.get("finalization")
                else None
            ),
            recheck=Recheck.model_validate_json(fields["recheck"]) if fields.get("recheck") else None,
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

    def get_tenant(self, job_id: str) -> str | None:
        value = self.redis.hget(self.keys.job(job_id), "tenant")
        return str(value) if value else (LEGACY_TENANT if self.redis.exists(self.keys.job(job_id)) else None)

    # status changes
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
            events.event_data(job_id, status=to.value, error=_error_value(fields.get("error"))),
            str(events.MAX_EVENTS),
        ]
        for name, value in encode_fields(fields).items():
            args += [name, value]
        keys = [self.keys.job(job_id), self.keys.job_events(job_id)]
        return int(self._transition(keys=keys, args=args))

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

    # listing
    def list_jobs(
        self, tenant: str, status: JobStatus | None, limit: int, cursor: str | None
    ) -> tuple[list[JobView], str | None]:
        """The tenant's jobs newest first, with their trial counts, in one round trip; the cursor is the last
        member of the previous page. Raises InvalidCursor."""
        [reply] = self.read(lambda pipe: self.queue_job_page(pipe, tenant, status, limit, cursor))
        return self.job_page_from(reply, limit)

    def queue_job_page(
        self, pipe: Any, tenant: str, status: JobStatus | None, limit: int, cursor: str | None
    ) -> None:
        """Queue on `pipe` the one script call `job_page_from` reads a page from. Raises InvalidCursor."""
        if cursor is not None and not cursor_pattern.match(cursor):
            raise InvalidCursor(cursor)
        upper = f"({cursor}" if cursor else "+"
        # EVALSHA itself: a script called on a pipeline costs redis-py a SCRIPT EXISTS round trip first.
        pipe.evalsha(
            self._page.sha, 1, self.keys.tenant_jobs(tenant, status), upper, limit, self.keys.job("")
        )

    def job_page_from(self, reply: list[Any], limit: int) -> tuple[list[JobView], str | None]:
        """The page and its cursor from the reply of the script `queue_job_page` queued."""
        jobs, cursor = self.stored_page_from(reply, limit)
        return [self._view(job) for job in jobs], cursor

    def stored_page_from(self, reply: list[Any], limit: int) -> tuple[list[StoredJob], str | None]:
        """`job_page_from`, unparsed: the page's jobs as stored, and its cursor."""
        members, *reads = reply
        page = members[:limit]
        # The script's HGETALLs come back as flat lists (field, value, ...).
        replies = [_pairs(read) if i % 3 < 2 else read for i, read in enumerate(reads)]
        jobs = self.stored_jobs_from([member.split(":", 1)[1] for member in page], replies)
        return [job for job in jobs if job is not None], (page[-1] if len(members) > limit else None)

    def jobs_with_status(self, status: JobStatus) -> list[str]:
        return [m.split(":", 1)[1] for m in self.redis.zrange(self.keys.jobs(status), 0, -1)]


def _pairs(flat: list[str]) -> dict[str, str]:
    """A hash as a Lua script returns HGETALL's reply (field, value, field, value ...), as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


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


def _error_value(error: Any) -> dict[str, Any] | None:
    return error.model_dump() if isinstance(error, ErrorInfo) else None
