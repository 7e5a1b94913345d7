"""Response bodies of the HTTP API (requests are `service.core.spec.JobCreate`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.core.catalog import Label
from service.core.data_plan import DataPlan
from service.core.dataset_models import ColumnInfo
from service.core.finalization import Finalization
from service.core.recheck import Recheck
from service.core.records import BEST_EPOCH, CHOSEN_BY, BestTrial, EarlyStop, ErrorInfo, WebhookStatus
from service.core.states import JobStatus, TrialStatus
from service.core.stop_when import StoppedBy


class Progress(BaseModel):
    """Trial counts of a job; `trials_total` is the trial budget (max_trials)."""

    trials_total: int
    completed: int
    running: int
    queued: int
    failed: int
    cancelled: int


class ObjectivePublic(BaseModel):
    name: str
    direction: str


class BestTrialPublic(BaseModel):
    """The best completed trial of a job so far; `id` is its id in GET /v1/jobs/{job_id}/trials."""

    id: str
    trial_id: str = Field(
        deprecated=True, description="the same as `id` (its name before trials had one name everywhere)"
    )
    hyperparameters: dict[str, Any] = Field(description="the values the search chose (tuned only)")
    objective_value: float
    metrics: dict[str, float]
    constants: dict[str, Any] = Field(
        default_factory=dict,
        description="the job's constant values, under the names a hyperparameter would have (with "
        "`hyperparameters`, the whole configuration; jobs started before constants were listed apart "
        "have them in `hyperparameters`)",
    )
    best_epoch: int | None = Field(None, description=BEST_EPOCH)
    chosen_by: str = Field("objective", description=CHOSEN_BY)

    @classmethod
    def of(cls, best: BestTrial) -> BestTrialPublic:
        return cls(id=best.trial_id, **best.model_dump())


class JobPublic(BaseModel):
    """A job as clients see it."""

    id: str
    name: str | None
    status: JobStatus
    task: str
    algorithm: str
    objective: ObjectivePublic
    progress: Progress
    stopped_by: StoppedBy | None = Field(
        None,
        description="the completion criterion (tuner.stop_when) that ended the search before max_trials: "
        "objective_reaches or no_improvement_trials, its setting, the trial that met it, a sentence",
    )
    best_trial: BestTrialPublic | None = Field(description="the best completed trial so far")
    error: ErrorInfo | None
    waiting: ErrorInfo | None = Field(
        None, description="why the job waits without progress (no_worker: no worker takes its queue)"
    )
    classes: list[Label] | None = Field(
        None,
        description="classifiers: output unit i of the model is classes[i] (binary: a probability above "
        "0.5 means classes[1])",
    )
    data: DataPlan | None = Field(
        None, description="what the job trains on: source, features, split (with checksum), preprocessing"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    finalization: Finalization | None = Field(
        None, description="its latest finalization (POST /v1/jobs/{id}/finalize): status, error, metrics"
    )
    recheck: Recheck | None = Field(
        None,
        description="its latest recheck (POST /v1/jobs/{id}/recheck): status, error, and each top trial's "
        "objective over other seeds",
    )
    spec: dict[str, Any] = Field(description="the request as accepted, defaults filled in, without its data")
    webhook: WebhookStatus | None = Field(
        None, description="the POSTs to the request's callback_url: each attempt, and whether one got a 2xx"
    )


class JobList(BaseModel):
    """A page of jobs, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[JobPublic]
    next_cursor: str | None


class ExecutionPublic(BaseModel):
    """One training execution of a trial: per-epoch history (left out with `history=false`), best epoch."""

    history: dict[str, list[float | None]] | None = Field(
        None,
        exclude_if=lambda value: value is None,
        description="per-epoch values; null where the value was NaN or infinite; absent with history=false",
    )
    best_epoch: int | None = None
    resumed_at_epochs: list[int] = Field(
        default_factory=list,
        description="epochs from which training continued from a checkpoint, after its worker was lost",
    )


class TrialPublic(BaseModel):
    """One trial: hyperparameters, per-execution per-epoch history, result, duration and worker."""

    id: str = Field(description="the trial's id; a job's best_trial.id names one of them")
    status: TrialStatus
    hyperparameters: dict[str, Any] = Field(description="the values the search chose (tuned only)")
    constants: dict[str, Any] = Field(
        default_factory=dict,
        description="the job's constant values, under the names a hyperparameter would have (with "
        "`hyperparameters`, the whole configuration)",
    )
    objective_value: float | None = Field(description="best epoch's objective, averaged over executions")
    metrics: dict[str, float] = Field(description="all metrics at the best epoch, averaged over executions")
    executions: list[ExecutionPublic]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    worker: str | None
    error: ErrorInfo | None
    stopped_early: EarlyStop | None = Field(
        None,
        description="set when tuner.pruning stopped the trial while it trained: the epoch and the reason; "
        "the trial is completed with its best value so far",
    )


class TrialList(BaseModel):
    job_id: str
    items: list[TrialPublic]


class DatasetPublic(BaseModel):
    """A data set: an upload (by id) or a built-in set (by name), with what its columns hold."""

    id: str = Field(description="what a job's data.dataset names: an upload's id, or a built-in set's name")
    name: str | None
    builtin: bool
    task: str | None = Field(None, description="built-in sets: the task they are made for")
    format: str = Field(description="csv, parquet, npz or builtin")
    rows: int
    columns: list[ColumnInfo]
    size: int = Field(description="bytes of the uploaded file")
    sha256: str = Field(description="of the uploaded file")
    created_at: datetime | None


class DatasetList(BaseModel):
    """Data sets: the built-in ones on the first page, then uploads, newest first."""

    items: list[DatasetPublic]
    next_cursor: str | None


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the offending value, e.g. objective.name")
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[FieldError] = Field(default_factory=list)


class ErrorBody(BaseModel):
    """Every 4xx and 5xx body."""

    error: ErrorDetail


class Health(BaseModel):
    """Liveness (/healthz) or readiness (/readyz), with what readiness checked."""

    status: str = Field(description="'ok' (/healthz), 'ready' or 'not ready' (/readyz)")
    checks: dict[str, Any] = Field(
        default_factory=dict,
        description="/readyz: `redis` ('ok' or why not); `queues`, each queue's consuming workers; "
        "`not_consuming`, each worker that answers but has left messages waiting while its pool idles, "
        "and why",
    )
