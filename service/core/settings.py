"""Configuration of the API and the workers, read once from KTUNE_* environment variables."""

from __future__ import annotations

import contextlib
import json
import os
from functools import lru_cache
from typing import Annotated, Any, Literal

from limits import parse_many
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.core.artifact_url import parse_artifact_url
from service.core.quotas import Quotas

# Loopback names only: a browser on this machine that a hostile page points at the API through a DNS name
# of its own (DNS rebinding) sends that name as the Host, and is refused. Starlette compares the Host
# header's host without its port, an IPv6 address in brackets.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


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
    artifact_url: str = Field(
        "",
        description="where artifacts are kept: empty for files under artifact_dir (shared by the API and "
        "every worker), or s3://bucket/prefix (artifact_dir is then each process's scratch and cache)",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    auth: Literal["on", "off"] = Field(
        "on",
        description="'on': every /v1 request needs an API key (`python -m service keys create TENANT`); "
        "'off' (only while the API listens on a loopback address): every caller is the tenant 'local'",
    )
    trusted_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(LOCAL_HOSTS),
        description="Host header values the API answers (without the port; `*.example.com` for "
        "subdomains, `*` for any); a JSON list or comma-separated; others get a 400",
    )
    job_rate_limit: str = Field(
        "30/minute",
        description="POST /v1/jobs per API key (per tenant with auth off), across API replicas, in the "
        "`limits` package's notation (`30/minute`, `10/second;500/hour`); empty or `off`: no limit",
    )
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
    worker_max_memory_per_child_mb: int = Field(
        # TensorFlow keeps some memory of every model it traces (6-10 MB each, with model.fit too), which only
        # a new process gives back. Replacing a pool process by its memory rather than its task count lets it
        # keep its traced models as long as memory allows: a new one imports TensorFlow again and traces
        # every model anew (bench/memory_soak.py, bench/hyperband_vs_random.py).
        1200,
        ge=0,
        description="a worker pool process whose resident memory exceeds this many MB after a task is "
        "replaced (0: never for its memory); raise it with the worker's memory for jobs with large data",
    )
    worker_max_tasks_per_child: int = Field(
        200,
        ge=0,
        description="a pool process is replaced after this many tasks, a backstop to its memory limit (0: "
        "never for its task count)",
    )
    training_loop: str = Field("fast", description="'fast' (compiled epochs) or 'fit' (plain model.fit)")
    warm_imports_seconds: float = Field(
        1.0,
        description="the API loads the modules its first requests need (numpy, pyarrow, Celery, "
        "prometheus_client) in the background this long after it starts serving; negative: at first use",
    )
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
    log_format: Literal["text", "json"] = Field(
        "text",
        description="'text': lines for people; 'json': one JSON object per line (time, level, logger, "
        "message, and job_id / trial_id where known), for log collectors",
    )
    events_keepalive_seconds: float = Field(
        15, gt=0, description="GET /v1/jobs/{id}/events sends a keep-alive comment after this long idle"
    )
    webhook_secret: str = Field(
        "",
        description="the key of webhooks' Ktune-Signature (HMAC-SHA256); empty: callback_url is refused",
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="callback_url hosts that may resolve to non-public addresses (loopback, private ...); "
        "a JSON list or comma-separated",
    )
    webhook_attempts: int = Field(5, ge=1, description="POSTs of one webhook at most, before it is given up")
    webhook_retry_seconds: float = Field(
        10,
        gt=0,
        description="the wait before a webhook's second POST; each later wait is three times the one before "
        "(10 s: 10, 30, 90, 270 s)",
    )
    webhook_timeout_seconds: float = Field(10, gt=0, description="a webhook POST's connect and read timeout")
    predict_max_rows: int = Field(
        1_000, ge=1, description="rows one POST /v1/jobs/{id}/predict may send (more: a 422 naming rows)"
    )
    predict_timeout_seconds: float = Field(
        30,
        gt=0,
        description="a prediction waits this long for a worker's answer, then is a 503 "
        "prediction_unavailable (a worker busy with a trial takes it only once the trial ends)",
    )
    finalize_timeout_seconds: float = Field(
        3600,
        gt=0,
        description="a finalization not finished this long after it was queued, or after a worker started "
        "it, has failed (worker_lost, or timed_out when its worker stops it) and may be started again",
    )
    recheck_timeout_seconds: float = Field(
        3600,
        gt=0,
        description="a recheck not finished this long after it was queued, or after a worker started it, has "
        "failed (worker_lost, or timed_out when its worker stops it) and may be started again",
    )
    limits: Limits = Field(default_factory=Limits)
    quotas: Quotas = Field(default_factory=Quotas)

    @field_validator("trusted_hosts", "webhook_allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: Any) -> Any:
        """A JSON list, or the plainer `a.example.com,b.example.com` an operator is likelier to write."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):  # a JSON list, or a comma-separated list starting with `[::1]`
                with contextlib.suppress(json.JSONDecodeError):
                    return json.loads(text)
            return [host.strip() for host in text.split(",") if host.strip()]
        return value

    @field_validator("trusted_hosts")
    @classmethod
    def _hosts_given(cls, value: list[str]) -> list[str]:
        """Patterns Starlette's TrustedHostMiddleware would refuse, or that could never match, fail here."""
        if not value:
            raise ValueError("names no host, so every request would be refused; `*` allows any")
        for host in value:
            if "*" in host[1:] or (host.startswith("*") and host != "*" and not host.startswith("*.")):
                raise ValueError(f"{host!r}: a wildcard is `*` or a leading `*.` (`*.example.com`)")
            if ":" in host and not host.startswith("["):
                raise ValueError(f"{host!r}: give a host without its port, and an IPv6 address in brackets")
        return value

    @field_validator("artifact_url")
    @classmethod
    def _artifact_url(cls, value: str) -> str:
        """Refused at start-up unless empty or s3://bucket/prefix (the ValueError says what to write)."""
        parse_artifact_url(value)
        return value.strip()

    @field_validator("job_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        """Refused at start-up when the `limits` package cannot read it; `off` is stored as ""."""
        value = value.strip()
        if value.lower() in ("", "off"):
            return ""
        parse_many(value)  # raises ValueError naming the string
        return value

    @property
    def visibility_timeout_seconds(self) -> int:
        """Above the longest trial, so the broker never redelivers a trial that is still running."""
        return self.trial_time_limit_seconds * 2 + 60


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
