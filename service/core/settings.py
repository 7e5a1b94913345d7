"""Configuration of the API and the workers, read once from KTUNE_* environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """Hard limits that keep one request from exhausting a worker (KTUNE_MAX_*)."""

    model_config = SettingsConfigDict(env_prefix="KTUNE_", extra="ignore")

    max_rows: int = Field(100_000, description="rows of inline data, train and validation together")
    max_features: int = Field(1_000, description="columns of x")
    max_hidden_layers: int = Field(32, description="hidden layers of an mlp")
    max_units: int = Field(4_096, description="units of one hidden layer")
    max_epochs: int = Field(10_000, description="epochs of one execution")
    max_trials: int = Field(1_000, description="trials of one job")
    max_executions_per_trial: int = Field(10, description="executions of one trial")
    max_parallel_trials: int = Field(64, description="trials of one job running at once")
    max_body_bytes: int = Field(32 * 1024 * 1024, description="size of a request body")
    max_dataset_bytes: int = Field(1024**3, description="size of an uploaded data-set file")
    max_range_values: int = Field(
        100_000,
        description="values keras-tuner lists for one hyperparameter range (its grid at its step)",
    )
    max_grid_size: int = Field(
        1_000_000, description="combinations of hyperparameter values a grid search walks"
    )
    max_choice_values: int = Field(100, description="entries of one `values` list")
    max_classes: int = Field(
        1_000,
        ge=2,
        le=2**31,
        description="classes of a classifier (distinct labels of its target)",
    )
    max_model_parameters: int = Field(
        10_000_000, description="weights of the largest model a job's search space allows"
    )
    max_hyperband_factor: int = Field(100, description="tuner.factor of a hyperband search")
    max_hyperband_iterations: int = Field(100, description="tuner.hyperband_iterations of a hyperband search")


class Settings(BaseSettings):
    """Everything the API and the workers read from the environment; defaults run a local setup."""

    model_config = SettingsConfigDict(env_prefix="KTUNE_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    artifact_dir: str = "var/artifacts"
    host: str = "127.0.0.1"
    port: int = 8000
    key_prefix: str = "ktune"
    trial_time_limit_seconds: int = Field(3_600, description="a trial task is stopped after this long")
    lease_seconds: int = Field(
        30,
        description="a trial's lease lapses when not renewed for this long; its worker renews it every third",
    )
    trial_max_worker_losses: int = Field(
        3,
        description="a trial whose worker is lost this many times while running it fails (worker_lost): "
        "it may be what kills its worker, running out of memory",
    )
    checkpoint_seconds: float = Field(
        30, description="a running trial writes an epoch checkpoint at most this often (0: after every chunk)"
    )
    worker_concurrency: int = Field(default_factory=lambda: os.cpu_count() or 1)
    worker_max_tasks_per_child: int = Field(
        # TensorFlow keeps some memory of every traced model (about 6-10 MB a trial, with model.fit too);
        # replacing a pool process after this many tasks bounds that, at a few seconds of imports each time.
        25,
        description="a worker pool process is replaced after this many tasks, bounding its memory",
    )
    training_loop: str = Field("fast", description="'fast' (compiled epochs) or 'fit' (plain model.fit)")
    stale_queued_seconds: int = Field(
        60, description="a job still queued after this long has its start message sent again"
    )
    step_lock_seconds: float = Field(
        30,
        description="a search step's lock on its job lapses when not renewed for this long; its worker "
        "renews it every third",
    )
    step_wait_seconds: float = Field(
        120, description="a search step waits this long for its job's lock, then its task is tried later"
    )
    no_worker_seconds: float = Field(
        600,
        description="a job whose queue no worker has consumed for this long fails with no_worker",
    )
    worker_heartbeat_seconds: float = Field(
        5, description="a worker node reports its queues, pool and waiting messages this often"
    )
    stalled_seconds: float = Field(
        30,
        description="a worker with messages waiting in its queues and an idle pool process for this long "
        "is not consuming (/readyz)",
    )
    job_retention_days: float = Field(
        30,
        ge=0,
        description="a finished job (its records and artifacts) is deleted this many days after it ended "
        "(fractions allowed; 0 keeps finished jobs forever)",
    )
    broker_transport_options: dict[str, Any] = Field(
        default_factory=dict,
        description='kombu Redis transport options (JSON) over ktune\'s own, e.g. {"socket_timeout": 30}',
    )
    body_timeout_seconds: float = Field(
        60,
        description="a request body must arrive within this long of its first byte being read; a slower "
        "client gets a 408 and its connection is closed",
    )
    large_body_bytes: int = Field(
        256 * 1024,
        description="a job body larger than this (or of unknown length) is parsed and validated in a "
        "separate process, so it cannot stall the API; smaller ones in a thread",
    )
    large_body_concurrency: int = Field(
        2, ge=1, description="large job bodies read and parsed at once (and the parse processes)"
    )
    large_body_wait_seconds: float = Field(
        30, description="a large body waits this long for its turn; then a 503 with Retry-After"
    )
    dataset_upload_seconds: float = Field(
        1_800, description="an upload to POST /v1/datasets must arrive within this long (else a 408)"
    )
    dataset_ingest_concurrency: int = Field(
        2, ge=1, description="uploads read into data sets at once; more wait their turn"
    )
    idempotency_seconds: int = Field(
        86_400,
        ge=1,
        description="an Idempotency-Key of POST /v1/jobs names its job this long after the submit (24 h); "
        "then the same key submits anew",
    )
    limits: Limits = Field(default_factory=Limits)

    @property
    def visibility_timeout_seconds(self) -> int:
        """Above the longest trial, so the broker never redelivers a trial that is still running."""
        return self.trial_time_limit_seconds * 2 + 60


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
