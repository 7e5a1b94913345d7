"""Why a trial stops before all its executions are trained: the trainers carry it, the runner acts on it."""

from __future__ import annotations

from enum import Enum


class StopReason(Enum):
    """What the progress hook answers when a trial must stop; None means it goes on."""

    JOB_ENDED = "job_ended"  # its job was cancelled, failed or deleted: the trial is cancelled
    OUT_OF_RUNTIME = "out_of_runtime"  # its job's limits.max_runtime_seconds passed: cancelled too
    TIMED_OUT = "timed_out"  # the trial passed limits.trial_timeout_seconds: it fails with trial_timeout
    LEASE_LOST = "lease_lost"  # another worker owns the trial now: this one records nothing
    SHUTDOWN = "shutdown"  # this worker is shutting down: the trial is handed back with its checkpoint
    PRUNED = "pruned"  # tuner.pruning's rule says it cannot win: completed with its best value so far
