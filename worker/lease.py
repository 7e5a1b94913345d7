"""Leases kept by a thread: a trial's lease while it trains, and a job's step lock while a search step runs.

Renewing from a thread rather than from the working code keeps the lease through anything slow there:
tracing a large model, one long epoch, saving a model, a Gaussian-process fit over many trials. Only a dead
or frozen process stops renewing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

import redis

from service.core.store import JobStore

log = logging.getLogger(__name__)


class Keeper:
    """Renews an acquired lease every third of its length until closed; then releases it.

    `lost` turns true when the lease could not be renewed because it lapsed or another owner holds it:
    what it guards then belongs to someone else, and this process must stop and write nothing.
    """

    def __init__(
        self,
        renew: Callable[[], bool],
        release: Callable[[], None],
        owner: str,
        seconds: float,
        what: str,
    ) -> None:
        self._renew_once = renew
        self._release = release
        self.owner = owner
        self.seconds = seconds
        self.what = what
        self._closed = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{what}", daemon=True)

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def __enter__(self) -> Keeper:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed.set()
        self._thread.join()
        try:
            self._release()
        except redis.RedisError:
            # Unreleased, the lease lapses on its own; failing here would hide the real outcome.
            log.warning("could not release the lease of %s", self.what)

    def _renew(self) -> None:
        while not self._closed.wait(self.seconds / 3):
            try:
                renewed = self._renew_once()
            except redis.RedisError as exc:
                # Redis may be restarting: keep trying; a lease that lapsed meanwhile fails to renew.
                log.warning("lease renewal of %s failed: %s", self.what, exc)
                continue
            if not renewed:
                log.warning("%s lost its lease", self.what)
                self._lost.set()
                return


def trial_lease(store: JobStore, job_id: str, trial_id: str, owner: str, seconds: float) -> Keeper:
    """The keeper of a trial's lease, acquired by `owner`."""
    return Keeper(
        lambda: store.renew_lease(job_id, trial_id, owner, seconds),
        lambda: store.release_lease(job_id, trial_id, owner),
        owner,
        seconds,
        f"trial {job_id}/{trial_id}",
    )


def step_lock(store: JobStore, job_id: str, owner: str, seconds: float) -> Keeper:
    """The keeper of a job's search-step lock, acquired by `owner`."""
    return Keeper(
        lambda: store.renew_step_lock(job_id, owner, seconds),
        lambda: store.release_step_lock(job_id, owner),
        owner,
        seconds,
        f"the search step of job {job_id}",
    )
