"""A job's runs in Redis: the `finalization` and `recheck` fields of the job's hash (JSON of a `Finalization`,
a `Recheck`).

In the job's hash, so that GET /v1/jobs/{id} reads them with the job in the same round trip, its cached
rendering is keyed by them (service.api.job_json), and deleting the job deletes them. Every write is a
transaction on the hash: a new run starts only when none of its kind is active, and a worker writes only the
run it runs (a replaced one's late result is dropped), never into a deleted job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Generic

from service.core.finalization import Finalization
from service.core.job_runs import JobRun, Run, current
from service.core.recheck import Recheck
from service.core.store_base import StoreBase


class JobRuns(Generic[Run]):
    """The latest run of one kind of each job, under the store's key prefix."""

    field: ClassVar[str]
    model: type[Run]

    def __init__(self, store: StoreBase) -> None:
        self.redis: Any = store.redis
        self.keys = store.keys

    def get(self, job_id: str) -> Run | None:
        text = self.redis.hget(self.keys.job(job_id), self.field)
        return None if text is None else self.model.model_validate_json(text)

    def begin(self, job_id: str, record: Run, now: datetime) -> Run | None:
        """Store `record` as the job's run unless one is queued or running at `now`: then that one is returned
        and nothing is stored. A job that does not exist stays so (None, nothing stored)."""
        active: Run | None = None

        def attempt(pipe: Any) -> None:
            nonlocal active
            active = None
            key = self.keys.job(job_id)
            if not pipe.exists(key):
                return
            text = pipe.hget(key, self.field)
            if text is not None:
                stored = current(self.model.model_validate_json(text), now)
                if not stored.status.is_final():
                    active = stored
                    return
            pipe.multi()
            pipe.hset(key, self.field, record.model_dump_json())

        self.redis.transaction(attempt, self.keys.job(job_id))
        return active

    def update(self, job_id: str, record: Run) -> bool:
        """Store `record` in place of the job's run when that is the same run (`run_id`) and has not ended as
        stored; False (nothing stored) otherwise, or when the job is gone."""
        stored_ok = False

        def attempt(pipe: Any) -> None:
            nonlocal stored_ok
            stored_ok = False
            key = self.keys.job(job_id)
            text = pipe.hget(key, self.field)
            if text is None:
                return  # no run, or no job
            stored = self.model.model_validate_json(text)
            if stored.run_id != record.run_id or stored.status.is_final():
                return
            pipe.multi()
            pipe.hset(key, self.field, record.model_dump_json())
            stored_ok = True

        self.redis.transaction(attempt, self.keys.job(job_id))  # run again if the hash changes meanwhile
        return stored_ok


class Finalizations(JobRuns[Finalization]):
    field = "finalization"
    model = Finalization


class Rechecks(JobRuns[Recheck]):
    field = "recheck"
    model = Recheck


RUN_FIELDS: dict[str, type[JobRun]] = {kind.field: kind.model for kind in (Finalizations, Rechecks)}
"""Each kind of run by the field of the job's hash that holds it."""
