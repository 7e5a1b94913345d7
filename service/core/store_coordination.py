"""Coordination in the store: who may do what, when several workers and API replicas could.

The owner of a job's search step (the step lock), of a trial (its lease), the sweeper's claims to re-send a
trial or a job's start or to nudge a stalled search, the count of workers a trial lost, and the API
replicas' turn at the periodic cleanup.
"""

from __future__ import annotations

import redis

from service.core.records import utcnow
from service.core.store_base import StoreBase

# Counts one more send of a queued job's start, only if no one else has since the count the caller read:
# of several API replicas' sweeps that saw the same stale job, one re-sends it.
_CLAIM_RESEND = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
if (redis.call('HGET', KEYS[1], 'start_sends') or '0') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'start_sends', ARGV[2], 'enqueued_at', ARGV[3])
return 1
"""

# Renews a lock, lease or claim only for its owner.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Releases a lock or lease only for its owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Releases the step lock (KEYS[1]) only for its owner, leaving one token in its wake list (KEYS[2]) that
# one waiting step takes (BLPOP) to try the lock at once rather than at its next poll.
_RELEASE_STEP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('RPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], -1, -1)
redis.call('PEXPIRE', KEYS[2], 60000)
return 1
"""


class Coordination(StoreBase):
    """Locks, leases and claims: each held by one owner at a time, and lapsing unless renewed."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        super().__init__(client, prefix, binary)
        self._claim_resend = client.register_script(_CLAIM_RESEND)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._release_step = client.register_script(_RELEASE_STEP)

    # the job's search step
    def acquire_step_lock(self, job_id: str, owner: str, seconds: float) -> bool:
        """Take the job's search-step lock for `seconds` unless another owner holds it."""
        return self._acquire(self.keys.step_lock(job_id), owner, seconds)

    def renew_step_lock(self, job_id: str, owner: str, seconds: float) -> bool:
        return self._renew_key(self.keys.step_lock(job_id), owner, seconds)

    def release_step_lock(self, job_id: str, owner: str) -> None:
        """Release the lock if `owner` holds it, and wake one step waiting for it (`wait_step_lock`)."""
        self._release_step(keys=[self.keys.step_lock(job_id), self.keys.step_lock_wake(job_id)], args=[owner])

    def wait_step_lock(self, job_id: str, seconds: float) -> None:
        """Wait until the job's step lock is released (or `seconds` pass): then it is worth trying again."""
        self.redis.blpop([self.keys.step_lock_wake(job_id)], timeout=seconds)

    def _acquire(self, key: str, owner: str, seconds: float) -> bool:
        return bool(self.redis.set(key, owner, nx=True, px=int(seconds * 1000)))

    def _renew_key(self, key: str, owner: str, seconds: float) -> bool:
        return int(self._renew(keys=[key], args=[owner, int(seconds * 1000)])) == 1

    # trials
    def acquire_lease(self, job_id: str, trial_id: str, owner: str, seconds: float) -> bool:
        return self._acquire(self.keys.trial_lease(job_id, trial_id), owner, seconds)

    def renew_lease(self, job_id: str, trial_id: str, owner: str, seconds: float) -> bool:
        return self._renew_key(self.keys.trial_lease(job_id, trial_id), owner, seconds)

    def release_lease(self, job_id: str, trial_id: str, owner: str) -> None:
        self._release(keys=[self.keys.trial_lease(job_id, trial_id)], args=[owner])

    def lease_holder(self, job_id: str, trial_id: str) -> str | None:
        value = self.redis.get(self.keys.trial_lease(job_id, trial_id))
        return str(value) if value is not None else None

    def holds_trials(self, job_id: str) -> bool:
        """Whether a worker holds a lease on any trial of the job (it may still be writing files)."""
        trials = self.redis.hkeys(self.keys.trial_status(job_id))
        if not trials:
            return False
        return bool(self.redis.exists(*(self.keys.trial_lease(job_id, trial) for trial in trials)))

    def claim_requeue(self, job_id: str, trial_id: str, seconds: float) -> bool:
        """True at most once per `seconds` for a trial, so a sweep does not re-send it again and again."""
        key = self.keys.trial_requeued(job_id, trial_id)
        return bool(self.redis.set(key, "1", nx=True, px=int(seconds * 1000)))

    def count_trial_loss(self, job_id: str, trial_id: str) -> int:
        """Note that a running trial's worker was lost; returns how many times that has happened."""
        return int(self.redis.incr(self.keys.trial_losses(job_id, trial_id)))

    def trial_losses(self, job_id: str, trial_id: str) -> int:
        return int(self.redis.get(self.keys.trial_losses(job_id, trial_id)) or 0)

    # the sweeper's claims on a job
    def claim_resend(self, job_id: str, sends: int) -> bool:
        """Note the job's start as sent once more, now, if it is still queued and sent `sends` times (the
        count the caller read): True for exactly one of several callers that read the same count."""
        args = [str(sends), str(sends + 1), utcnow().isoformat()]
        return int(self._claim_resend(keys=[self.keys.job(job_id)], args=args)) == 1

    def claim_nudge(self, job_id: str, seconds: float) -> bool:
        """True at most once per `seconds` for a job, across API replicas: the right to nudge its search."""
        return bool(self.redis.set(self.keys.nudged(job_id), "1", nx=True, px=int(seconds * 1000)))

    # the API replicas' cleanup
    def claim_cleanup(self, owner: str, seconds: float) -> bool:
        """Claim the cleanup for `seconds` (False: another API replica holds it), so replicas take turns."""
        key = self.keys.cleanup_claim
        return bool(self.redis.set(key, owner, nx=True, px=max(1, int(seconds * 1000))))

    def extend_cleanup_claim(self, owner: str, seconds: float) -> None:
        """Let the owner's claim lapse `seconds` from now instead (spacing cleanup rounds)."""
        self._renew(keys=[self.keys.cleanup_claim], args=[owner, max(1, int(seconds * 1000))])
