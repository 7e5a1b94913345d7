"""What the store keeps of a job and its trials; the API renders these, the worker writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from service.core.data_plan import DataPlan
from service.core.finalization import Finalization
from service.core.recheck import Recheck
from service.core.states import JobStatus, TrialStatus
from service.core.stop_when import StoppedBy


def utcnow() -> datetime:
    return datetime.now(UTC)


class ErrorInfo(BaseModel):
    """Why a job or trial failed: a machine-readable code and a sentence for people."""

    code: str
    message: str


BEST_EPOCH = "the epoch (from 0) of its best objective value; the latest over its executions"
CHOSEN_BY = (
    "the rule that made it the best: `objective`, `tie_breaker:<metric>` (an equal objective value, a better "
    "objective.tie_breaker), `fewer_epochs` (objective.prefer_fewer_epochs) or `first_completed` (equal by "
    "every rule: the first to complete)"
)
_CONSTANTS = "the job's constant values (not tuned), under the names a hyperparameter would have"


class BestTrial(BaseModel):
    """The best completed trial of a job so far."""

    trial_id: str
    hyperparameters: dict[str, Any]
    objective_value: float
    metrics: dict[str, float]
    constants: dict[str, Any] = Field(default_factory=dict, description=_CONSTANTS)
    best_epoch: int | None = Field(None, description=BEST_EPOCH)
    chosen_by: str = Field("objective", description=CHOSEN_BY)


class WebhookAttempt(BaseModel):
    """One POST of a job's webhook: when, and the receiver's status code or why there was none."""

    at: datetime
    event: str = Field(description="what was told: the job's terminal status")
    status_code: int | None = None
    error: str | None = None


class WebhookStatus(BaseModel):
    """The deliveries of a job's webhook (its request's callback_url)."""

    url: str
    attempts: list[WebhookAttempt] = Field(default_factory=list)
    delivered: bool = Field(False, description="a POST was answered with a 2xx status")


# The tenant of records stored before tenants existed, and of every caller while auth is off.
LEGACY_TENANT = "local"


class JobRecord(BaseModel):
    """A job as stored; `spec` is the request without its data arrays."""

    id: str
    tenant: str = Field(LEGACY_TENANT, description="the tenant of the API key that created it")
    status: JobStatus
    spec: dict[str, Any]
    created_at: datetime
    enqueued_at: datetime | None = None
    start_sends: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorInfo | None = None
    best: BestTrial | None = None
    last_step_at: datetime | None = None  # when a worker last took a step of the job's search
    nudges: int = 0  # how often the sweeper has restarted a search that stalled
    waiting: ErrorInfo | None = None  # why the job is not progressing, while it waits (no worker ...)
    data: DataPlan | None = None  # what the job trains on (None for jobs stored before plans existed)
    webhook: WebhookStatus | None = None  # the deliveries of its callback_url, once one was tried
    stopped_by: StoppedBy | None = None  # the completion criterion (tuner.stop_when) that ended its search
    finalization: Finalization | None = None  # its latest POST /v1/jobs/{id}/finalize
    recheck: Recheck | None = None  # its latest POST /v1/jobs/{id}/recheck


class ExecutionRecord(BaseModel):
    """One training execution of a trial: per-epoch history and its best epoch."""

    history: dict[str, list[float | None]] = Field(
        default_factory=dict, description="per-epoch values; null where the value was NaN or infinite"
    )
    best_epoch: int | None = None
    resumed_at_epochs: list[int] = Field(
        default_factory=list,
        description="epochs from which training continued from a checkpoint, after its worker was lost",
    )


class EarlyStop(BaseModel):
    """Why a trial was stopped while it trained (`tuner.pruning`); it counts as completed all the same."""

    epoch: int = Field(description="the epochs it had trained, counting from 1, when it was stopped")
    rule: str = Field(description="the tuner.pruning rule that stopped it: median or asha")
    reason: str = Field(description="the values the rule compared, in words")


class TrialRecord(BaseModel):
    """A trial as stored and shown: hyperparameters, progress and result."""

    id: str
    status: TrialStatus
    hyperparameters: dict[str, Any]
    constants: dict[str, Any] = Field(default_factory=dict, description=_CONSTANTS)
    objective_value: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    executions: list[ExecutionRecord] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    worker: str | None = None
    error: ErrorInfo | None = None
    stopped_early: EarlyStop | None = None  # pruned by tuner.pruning: completed with its best value so far

    def cancelled(self) -> TrialRecord:
        """This trial, stopped because its job was cancelled or ran out of time."""
        return self.model_copy(update={"status": TrialStatus.CANCELLED, "finished_at": utcnow()})
