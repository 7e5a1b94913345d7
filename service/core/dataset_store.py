"""Data-set records in Redis, beside the job store (`service.core.store_keys` names every key).

- `{p}:dataset:{id}` the data set's record (JSON: name, creation time, what its upload found)
- `{p}:dataset:{id}:jobs` sorted set of the jobs that use it, scored by when each was submitted
- `{p}:datasets` sorted set of `{created_us:020d}:{id}`, for listing; `{p}:tenant:{tenant}:datasets` the
  same for one tenant (what it lists); its file's bytes are counted in `{p}:tenant:{tenant}:usage`

A job is attached to its data sets before the job is stored, and a data set is deleted only when none of
its jobs is queued or running, in one script each: a job can never be queued on a deleted data set.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from service.core.dataset_models import DatasetInfo
from service.core.records import LEGACY_TENANT
from service.core.states import JobStatus
from service.core.store import InvalidCursor, JobStore, cursor_pattern, index_member

# Attaches a job to a data set while the data set exists.
_ATTACH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""

# Deletes a data set unless a job using it is queued or running, or was attached in the last ARGV[3]
# seconds and is not stored yet (it is being submitted). Returns {1}, {-1} (no such data set) or
# {0, job id}. Jobs that have ended or are gone are forgotten on the way.
_DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local jobs = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #jobs, 2 do
  local status = redis.call('HGET', ARGV[1] .. jobs[i], 'status')
  if status then
    if string.find(',' .. ARGV[5] .. ',', ',' .. status .. ',', 1, true) then return {0, jobs[i]} end
    redis.call('ZREM', KEYS[2], jobs[i])
  elseif tonumber(jobs[i + 1]) > tonumber(ARGV[2]) - tonumber(ARGV[3]) then
    return {0, jobs[i]}
  else
    redis.call('ZREM', KEYS[2], jobs[i])
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('HDEL', KEYS[5], 'dataset:' .. ARGV[6])
return {1}
"""

_SUBMIT_GRACE_SECONDS = 60  # a job attached this recently but not stored yet is being submitted


class DatasetRecord(BaseModel):
    """An uploaded data set as stored."""

    id: str
    tenant: str = LEGACY_TENANT
    name: str | None
    created_at: datetime
    info: DatasetInfo


class DatasetInUse(Exception):
    """A queued or running job (`job_id`) uses the data set."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class DatasetStore:
    """Uploaded data sets' records and which jobs use them."""

    def __init__(self, jobs: JobStore) -> None:
        self.redis: Any = jobs.redis
        self.prefix = jobs.prefix
        self.keys = jobs.keys
        self._job_prefix = jobs.keys.job("")
        self._attach = self.redis.register_script(_ATTACH)
        self._delete = self.redis.register_script(_DELETE)

    def create(self, record: DatasetRecord, stored_bytes: int) -> None:
        """Store the record, index it for its tenant, and count its stored file's bytes against the tenant's
        artifact_bytes quota."""
        member = index_member(record.created_at, record.id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.dataset(record.id), record.model_dump_json())
        pipe.zadd(self.keys.datasets, {member: 0})
        pipe.zadd(self.keys.tenant_datasets(record.tenant), {member: 0})
        pipe.hset(self.keys.tenant_usage(record.tenant), f"dataset:{record.id}", stored_bytes)
        pipe.execute()

    def get(self, dataset_id: str) -> DatasetRecord | None:
        raw = self.redis.get(self.keys.dataset(dataset_id))
        return DatasetRecord.model_validate_json(raw) if raw else None

    def page(
        self, tenant: str, limit: int, cursor: str | None = None
    ) -> tuple[list[DatasetRecord], str | None]:
        """A page of the tenant's data sets, newest first, and the next page's cursor (None at the end)."""
        if cursor is not None and not cursor_pattern.match(cursor):
            raise InvalidCursor(cursor)
        upper = f"({cursor}" if cursor else "+"
        index = self.keys.tenant_datasets(tenant)
        members = self.redis.zrevrangebylex(index, upper, "-", start=0, num=limit + 1)
        page = members[:limit]
        raws = self.redis.mget([self.keys.dataset(m.split(":", 1)[1]) for m in page]) if page else []
        records = [DatasetRecord.model_validate_json(raw) for raw in raws if raw]
        return records, page[-1] if len(members) > limit else None

    def existing(self, dataset_ids: list[str]) -> list[bool]:
        """Whether each data set has a record."""
        pipe = self.redis.pipeline(transaction=False)
        for dataset_id in dataset_ids:
            pipe.exists(self.keys.dataset(dataset_id))
        return [bool(found) for found in pipe.execute()]

    def attach_job(self, dataset_id: str, job_id: str) -> bool:
        """Note that a job being submitted uses the data set; False when the data set is gone."""
        keys = [self.keys.dataset(dataset_id), self.keys.dataset_jobs(dataset_id)]
        return bool(self._attach(keys=keys, args=[job_id, time.time()]))

    def delete(self, record: DatasetRecord) -> bool:
        """Delete the record; False when there is none. Raises DatasetInUse."""
        dataset_id, tenant = record.id, record.tenant
        keys = [
            self.keys.dataset(dataset_id),
            self.keys.dataset_jobs(dataset_id),
            self.keys.datasets,
            self.keys.tenant_datasets(tenant),
            self.keys.tenant_usage(tenant),
        ]
        active = f"{JobStatus.QUEUED.value},{JobStatus.RUNNING.value}"
        member = index_member(record.created_at, dataset_id)
        args = [self._job_prefix, time.time(), _SUBMIT_GRACE_SECONDS, member, active, dataset_id]
        result = self._delete(keys=keys, args=args)
        if int(result[0]) == 0:
            raise DatasetInUse(str(result[1]))
        return int(result[0]) == 1
