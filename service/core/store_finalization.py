"""A job's finalization in Redis: the `finalization` field of the job's hash (JSON of a `Finalization`).

In the job's hash, so that GET /v1/jobs/{id} reads it with the job in the same round trip, its cached
rendering is keyed by it (service.api.job_json), and deleting the job deletes it. Every write is a
transaction on the hash: a new finalization starts only when none is active, and a worker writes only the
finalization it runs (a replaced one's late result is dropped), never into a deleted job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.core.finalization import Finalization, current
from service.core.store_base import StoreBase

FIELD = "finalization"


class Finalizations:
    """Finalizations of jobs, under the store's key prefix."""

    def __init__(self, store: StoreBase) -> None:
        self.redis: Any = store.redis
        self.keys = store.keys

    def get(self, job_id: str) -> Finalization | None:
        text = self.redis.hget(self.keys.job(job_id), FIELD)
        return None if text is None else Finalization.model_validate_json(text)

    def begin(self, job_id: str, record: Finalization, now: datetime) -> Finalization | None:
        """Store `record` as the job's finalization unless one is queued or running at `now`: then that one is
        returned and nothing is stored. A job that does not exist stays so (None, nothing stored)."""
        active: Finalization | None = None

        def attempt(pipe: Any) -> None:
            nonlocal active
            active = None
            key = self.keys.job(job_id)
            if not pipe.exists(key):
                return
            text = pipe.hget(key, FIELD)
            if text is not None:
                stored = current(Finalization.model_validate_json(text), now)
                if not stored.status.is_final():
                    active = stored
                    return
            pipe.multi()
            pipe.hset(key, FIELD, record.model_dump_json())

        self.redis.transaction(attempt, self.keys.job(job_id))
        return active

    def update(self, job_id: str, record: Finalization) -> bool:
        """Store `record` in place of the job's finalization when that is the same run (`run_id`) and has not
        ended as stored; False (nothing stored) otherwise, or when the job is gone."""
        stored_ok = False

        def attempt(pipe: Any) -> None:
            nonlocal stored_ok
            stored_ok = False
            key = self.keys.job(job_id)
            text = pipe.hget(key, FIELD)
            if text is None:
                return  # no finalization, or no job
            stored = Finalization.model_validate_json(text)
            if stored.run_id != record.run_id or stored.status.is_final():
                return
            pipe.multi()
            pipe.hset(key, FIELD, record.model_dump_json())
            stored_ok = True

        self.redis.transaction(attempt, self.keys.job(job_id))  # run again if the hash changes meanwhile
        return stored_ok
