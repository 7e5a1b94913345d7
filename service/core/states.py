"""Job and trial status values as clients see them."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """A job's lifecycle: queued -> running -> succeeded | failed | cancelled."""

    QUEUED = "queued"  # stored and its start message sent; no trial has started
    RUNNING = "running"  # the search has started on some worker
    SUCCEEDED = "succeeded"  # the search ended and at least one trial completed
    FAILED = "failed"  # the search could not go on; `error` says why
    CANCELLED = "cancelled"  # a client cancelled it; finished trials and the best model are kept

    def is_final(self) -> bool:
        return self in TERMINAL_JOB_STATES


TERMINAL_JOB_STATES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# Which status a job may move to from which; terminal states have no way out.
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class TrialStatus(StrEnum):
    """A trial's lifecycle: queued -> running -> completed | failed | cancelled."""

    QUEUED = "queued"  # created by the search algorithm, waiting for a worker
    RUNNING = "running"  # a worker holds its lease and trains it
    COMPLETED = "completed"  # trained; its objective value counts
    FAILED = "failed"  # could not be trained with these hyperparameters; `error` says why
    CANCELLED = "cancelled"  # stopped because its job was cancelled

    def is_final(self) -> bool:
        return self in TERMINAL_TRIAL_STATES


TERMINAL_TRIAL_STATES = frozenset({TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.CANCELLED})

# Which status a stored trial may move to from which. running -> running is a progress report, or another
# worker taking over a trial whose worker was lost; running -> queued hands a trial back (warm shutdown);
# queued -> failed is a trial refused before it ran (its worker kept dying). Finished trials never change.
TRIAL_TRANSITIONS: dict[TrialStatus, frozenset[TrialStatus]] = {
    TrialStatus.QUEUED: frozenset({TrialStatus.RUNNING, TrialStatus.FAILED, TrialStatus.CANCELLED}),
    TrialStatus.RUNNING: frozenset(
        {
            TrialStatus.RUNNING,
            TrialStatus.QUEUED,
            TrialStatus.COMPLETED,
            TrialStatus.FAILED,
            TrialStatus.CANCELLED,
        }
    ),
    TrialStatus.COMPLETED: frozenset(),
    TrialStatus.FAILED: frozenset(),
    TrialStatus.CANCELLED: frozenset(),
}
