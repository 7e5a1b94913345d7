"""A running trial's progress hook: records its history, and says when and why the trial must stop."""

from __future__ import annotations

import json
import math
import time

from service.core import events, lifecycle
from service.core.records import EarlyStop, ExecutionRecord, TrialRecord
from service.core.store import JobStore
from worker.lease import Keeper
from worker.pruning import Pruner
from worker.stops import StopReason

_WRITE_EVERY_SECONDS = 0.5


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity: a diverged epoch's value is recorded as null."""
    return value if math.isfinite(value) else None


class TrialProgress:
    """The trainers' on-epoch hook for one trial.

    Each epoch goes into the record's history at once and into the store about twice a second (appended,
    not rewritten); the latest epoch at each write becomes a trial.epoch event (not every epoch: a job's
    event stream keeps its size for trials of thousands of short epochs). The first reason to stop that it
    finds (`StopReason`) is its answer from then on. With a `pruner`, every epoch of the first execution
    is judged by the job's pruning rule; `pruned` says why a trial it stopped was stopped.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        record: TrialRecord,
        lease: Keeper,
        node: str,
        timeout_seconds: float | None,
        runtime_left_seconds: float,
        earlier_seconds: float = 0.0,
        pruner: Pruner | None = None,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.record = record
        self.lease = lease
        self.node = node
        self.stop: StopReason | None = None
        self.pruner = pruner
        self.pruned: EarlyStop | None = None
        self.earlier_seconds = earlier_seconds  # spent on the trial by workers before this one
        self._timeout = timeout_seconds if timeout_seconds is not None else math.inf
        self._started = time.monotonic()
        self._job_deadline = self._started + runtime_left_seconds
        self._last_write = 0.0
        self._pending: list[str] = []
        self._latest: tuple[int, dict[str, float | None]] | None = None  # not yet told as an event

    def elapsed(self) -> float:
        """Seconds the trial has run, on this worker and on those before it up to its checkpoint."""
        return self.earlier_seconds + time.monotonic() - self._started

    def start_execution(self) -> None:
        self.record.executions.append(ExecutionRecord())

    def __call__(self, epoch: int, logs: dict[str, float]) -> StopReason | None:
        values = {name: finite_or_none(value) for name, value in logs.items()}
        history = self.record.executions[-1].history
        for name, value in values.items():
            history.setdefault(name, []).append(value)
        self._pending.append(json.dumps([len(self.record.executions) - 1, values], separators=(",", ":")))
        self._latest = (epoch + 1, values)
        if self.stop is None and self.elapsed() > self._timeout:
            self.stop = StopReason.TIMED_OUT
        if self.stop is None and self.pruner is not None and len(self.record.executions) == 1:
            verdict = self.pruner.observe(epoch + 1, values.get(self.pruner.objective))
            if verdict is not None:
                self.pruned = verdict.at(epoch + 1)
                self.stop = StopReason.PRUNED
        if self.stop is not None or time.monotonic() - self._last_write < _WRITE_EVERY_SECONDS:
            return self.stop
        return self.check(whole_record=False)

    def check(self, whole_record: bool = True) -> StopReason | None:
        """Write what is new (the whole record too, unless told not to); the reason to stop, if any."""
        if self.stop is None:
            self.stop = self._reason(whole_record)
        return self.stop

    def flush_history(self) -> None:
        """Append the epochs not written yet, while the trial is still running."""
        pending, self._pending = self._pending, []
        self.store.append_history(self.job_id, self.record.id, pending)
        self._tell_latest()

    def _tell_latest(self) -> None:
        if self._latest is not None:
            epoch, metrics = self._latest
            self._latest = None
            events.trial_epoch(self.store, self.job_id, self.record.id, epoch, metrics)

    def _reason(self, whole_record: bool) -> StopReason | None:
        self._last_write = time.monotonic()
        if self.lease.lost:
            return StopReason.LEASE_LOST  # another worker owns the trial: it records the trial, not this one
        if self.node and self.store.is_draining(self.node):
            return StopReason.SHUTDOWN
        pending, self._pending = self._pending, []
        running = self.store.append_history(self.job_id, self.record.id, pending)
        self._tell_latest()
        if whole_record:
            running = lifecycle.report_progress(self.store, self.job_id, self.record) and running
        status = self.store.get_status(self.job_id)
        if not running or status is None or status.is_final():
            return StopReason.JOB_ENDED
        if time.monotonic() > self._job_deadline:
            return StopReason.OUT_OF_RUNTIME
        return None
