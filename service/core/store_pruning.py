"""What `tuner.pruning` compares a training trial with, in one small hash per job (`JobPart.PRUNING`).

The median rule reads, at each epoch, the objective of every trial that trained to its end at that same
epoch: one field per epoch holds them all, so a read is one HMGET however many trials ended. ASHA reads
and writes a rung's values the same way. A trial that is run again (a redelivered task, a worker lost)
adds nothing twice: each value has a mark of its trial, set with it in one script. Writes need the job
to exist, so a deleted job's trial leaves no key behind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import redis

from service.core.store_base import StoreBase

# KEYS: the pruning hash, the job's hash. ARGV[1]: the trial; ARGV[2..]: its objective at each epoch from
# the first ('' where it had none). Adds each value to its epoch's list, once per trial; 1 when it did.
_RECORD_CURVE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'done:' .. ARGV[1], '1') == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'completed', 1)
for i = 2, #ARGV do
  if ARGV[i] ~= '' then
    local field = 'epoch:' .. (i - 1)
    local old = redis.call('HGET', KEYS[1], field)
    redis.call('HSET', KEYS[1], field, old and (old .. ',' .. ARGV[i]) or ARGV[i])
  end
end
return 1
"""

# KEYS: the pruning hash, the job's hash. ARGV: trial, rung, value. Adds the trial's value at the rung
# unless it has one there already; returns the trial's value there (the first one given) and the rung's.
_RECORD_RUNG = """
local mark = 'rung:' .. ARGV[2] .. ':' .. ARGV[1]
local field = 'rung:' .. ARGV[2]
if redis.call('EXISTS', KEYS[2]) == 1 and redis.call('HSETNX', KEYS[1], mark, ARGV[3]) == 1 then
  local old = redis.call('HGET', KEYS[1], field)
  redis.call('HSET', KEYS[1], field, old and (old .. ',' .. ARGV[3]) or ARGV[3])
end
return {redis.call('HGET', KEYS[1], mark) or ARGV[3], redis.call('HGET', KEYS[1], field) or ARGV[3]}
"""


def _number(value: float | None) -> str:
    # repr is the shortest text that reads back as the same float; a NaN or infinite value is no value.
    return repr(float(value)) if value is not None and math.isfinite(value) else ""


def _numbers(joined: str | None) -> list[float]:
    return [float(part) for part in joined.split(",")] if joined else []


class PruningRecords(StoreBase):
    """Objective values of a job's trials by epoch and by rung, for `tuner.pruning`'s rules."""

    def __init__(self, client: redis.Redis, prefix: str = "ktune", binary: redis.Redis | None = None) -> None:
        super().__init__(client, prefix, binary)
        self._record_curve = client.register_script(_RECORD_CURVE)
        self._record_rung = client.register_script(_RECORD_RUNG)

    def record_completed_curve(self, job_id: str, trial_id: str, values: Sequence[float | None]) -> bool:
        """Add a trial that trained to its end: its objective at each epoch from the first. False when it
        was added before (or its job is gone): nothing changes."""
        keys = [self.keys.job_pruning(job_id), self.keys.job(job_id)]
        return int(self._record_curve(keys=keys, args=[trial_id, *map(_number, values)])) == 1

    def completed_at_epoch(self, job_id: str, epoch: int) -> tuple[int, list[float]]:
        """How many trials trained to their end, and their finite objective values at `epoch` (from 1)."""
        completed, by_epoch = self.completed_at_epochs(job_id, epoch, epoch)
        return completed, by_epoch[epoch]

    def completed_at_epochs(self, job_id: str, first: int, last: int) -> tuple[int, dict[int, list[float]]]:
        """`completed_at_epoch` for each epoch from `first` to `last`, in one read."""
        epochs = range(first, last + 1)
        fields = ["completed", *(f"epoch:{epoch}" for epoch in epochs)]
        completed, *joined = self.redis.hmget(self.keys.job_pruning(job_id), fields)
        values = {epoch: _numbers(text) for epoch, text in zip(epochs, joined, strict=True)}
        return int(completed or 0), values

    def record_rung(self, job_id: str, trial_id: str, rung: int, value: float) -> tuple[float, list[float]]:
        """Add a trial's (finite) value at an ASHA rung unless it has one there; its value there and every
        value at the rung, its own included. Raises ValueError for a NaN or infinite value."""
        if not math.isfinite(value):
            raise ValueError(f"a rung holds finite values only, not {value}")
        keys = [self.keys.job_pruning(job_id), self.keys.job(job_id)]
        own, joined = self._record_rung(keys=keys, args=[trial_id, str(rung), _number(value)])
        return float(own), _numbers(joined)
