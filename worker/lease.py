"""A trial's lease, renewed by a thread for as long as the trial trains.

Renewing from a thread rather than between epochs keeps the lease through anything slow on the training
thread: tracing a large model, one long epoch, saving a model. Only a dead or frozen process stops renewing.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis

from service.core.store import JobStore

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews an acquired lease every third of its length until closed; then releases it.

    `lost` turns true when the lease could not be renewed because it lapsed or another owner holds it: the
    trial then belongs to someone else and this worker must stop and record nothing.
    """

    def __init__(self, store: JobStore, job_id: str, trial_id: str, owner: str, seconds: float) -> None:
        self.store = store
        self.job_id = job_id
        self.trial_id = trial_id
        self.owner = owner
        self.seconds = seconds
        self._closed = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job_id}/{trial_id}", daemon=True)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed.set()
        self._thread.join()
        try:
            self.store.release_lease(self.job_id, self.trial_id, self.owner)
        except redis.RedisError:
            # Unreleased, the lease lapses on its own; failing here would hide the task's real outcome.
            log.warning("could not release the lease of trial %s/%s", self.job_id, self.trial_id)

    def _renew(self) -> None:
        while not self._closed.wait(self.seconds / 3):
            try:
                renewed = self.store.renew_lease(self.job_id, self.trial_id, self.owner, self.seconds)
            except redis.RedisError as exc:
                # Redis may be restarting: keep trying; a lease that lapsed meanwhile fails to renew.
                log.warning("lease renewal of trial %s/%s failed: %s", self.job_id, self.trial_id, exc)
                continue
            if not renewed:
                log.warning("trial %s/%s lost its lease", self.job_id, self.trial_id)
                self._lost.set()
                return
