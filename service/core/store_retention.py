"""Deleting jobs from the store: a finished job with every key of its layout at once, the leftover keys of
jobs already deleted, and the finished jobs retention looks at."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum

import redis

from service.core.records import LEGACY_TENANT
from service.core.states import TERMINAL_JOB_STATES, JobStatus
from service.core.store_base import StoreBase, optional_time
from service.core.store_keys import TENANT_JOBS, TENANT_STATUS, TENANT_USAGE, JobPart, TrialPart

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


class JobRetention(StoreBase):
    """Deleting finished jobs, and what retention needs to find them."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        super().__init__(client, prefix, binary)
        self._delete = client.register_script(_DELETE)

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
