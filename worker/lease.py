"""Leases kept by a thread: a trial's lease while it trains, and a job's step lock while a search step runs.

Renewing from a thread rather than from the working code keeps the lease through anything slow there:
tracing a large model, one long epoch, saving a model, a Gaussian-process fit over many trials. Only a dead
or frozen process stops renewing. One thread per process renews every lease the process holds, each when it
is due: a search step takes milliseconds, and starting and joining a thread for each (waiting for a core to
run it when the machine is busy) cost more than the step's own work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
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
        self._lost = threading.Event()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def __enter__(self) -> Keeper:
        _RENEWER.add(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        _RENEWER.remove(self)  # returns once no renewal of this lease is under way
        try:
            self._release()
        except redis.RedisError:
            # Unreleased, the lease lapses on its own; failing here would hide the real outcome.
            log.warning("could not release the lease of %s", self.what)

    def renew(self) -> bool:
        """Renew once; False once the lease is lost (it is then renewed no more)."""
        try:
            renewed = self._renew_once()
        except redis.RedisError as exc:
            # Redis may be restarting: keep trying; a lease that lapsed meanwhile fails to renew.
            log.warning("lease renewal of %s failed: %s", self.what, exc)
            return True
        if not renewed:
            log.warning("%s lost its lease", self.what)
            self._lost.set()
        return renewed


class _Renewer:
    """The process's lease-renewing thread: renews each open Keeper every third of its lease, one at a time,
    and lets a Keeper close only when none of its renewals is under way (so none follows its release)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._due: dict[Keeper, float] = {}
        self._renewing: Keeper | None = None
        self._thread: threading.Thread | None = None

    def add(self, keeper: Keeper) -> None:
        with self._changed:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ktune-leases", daemon=True)
                self._thread.start()
            self._due[keeper] = time.monotonic() + keeper.seconds / 3
            self._changed.notify_all()

    def remove(self, keeper: Keeper) -> None:
        with self._changed:
            self._due.pop(keeper, None)
            while self._renewing is keeper:
                self._changed.wait()

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                keeper = next((k for k, at in self._due.items() if at <= now), None)
                if keeper is None:
                    self._changed.wait(min(self._due.values(), default=now + 3600.0) - now)
                    continue
                self._renewing = keeper
                self._changed.release()
                try:
                    keep = keeper.renew()
                except Exception:
                    # Never let one lease's surprise stop the renewal of every other: try it again when due.
                    log.exception("renewing the lease of %s failed", keeper.what)
                    keep = True
                finally:
                    self._changed.acquire()
                    self._renewing = None
                    self._changed.notify_all()
                if keeper in self._due:
                    if keep:
                        self._due[keeper] = time.monotonic() + keeper.seconds / 3
                    else:
                        del self._due[keeper]


_RENEWER = _Renewer()


def _new_renewer_in_child() -> None:
    # A forked child has none of its parent's threads, and the parent's lock may have been held mid-fork.
    global _RENEWER
    _RENEWER = _Renewer()


os.register_at_fork(after_in_child=_new_renewer_in_child)


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
