"""Runs one trial: takes its lease, trains every execution, records progress, hands the result on."""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import redis
from celery.exceptions import SoftTimeLimitExceeded

from service.core import queue
from service.core.records import ExecutionRecord, TrialRecord, utcnow
from service.core.spec import JobSpec
from service.core.states import TrialStatus
from worker import search
from worker.checkpoints import Checkpointer, TrialCheckpoint, load_checkpoint
from worker.context import WorkerContext, load_spec
from worker.data import job_arrays
from worker.lease import LeaseKeeper
from worker.model_builder import build_model
from worker.runtime import release_memory
from worker.training import (
    CheckpointHook,
    EpochCallback,
    ExecutionResult,
    ExecutionState,
    FitOptions,
    TrainData,
    fit_execution,
)

log = logging.getLogger(__name__)

_WRITE_EVERY_SECONDS = 0.5


def _train(
    model: keras.Model,
    data: TrainData,
    options: FitOptions,
    on_epoch: EpochCallback,
    loop: str,
    checkpoint: CheckpointHook,
    resume: ExecutionState | None,
) -> ExecutionResult:
    if loop == "fast":
        from worker.fast_training import fast_fit_execution

        return fast_fit_execution(model, data, options, on_epoch, checkpoint, resume)
    return fit_execution(model, data, options, on_epoch, checkpoint, resume)


def _model_for_execution(previous: keras.Model | None, fresh: keras.Model, loop: str) -> keras.Model:
    if previous is None or loop != "fast":
        return fresh
    from worker.fast_training import reuse_for_execution

    return reuse_for_execution(previous, fresh)


def execution_seed(spec: JobSpec, trial_id: str, execution: int) -> int:
    """Reproducible per trial and execution when the job has a seed; random otherwise."""
    if spec.tuner.seed is None:
        return random.randrange(2**31)
    return (spec.tuner.seed * 1_000_003 + int(trial_id) * 1_009 + execution) % 2**31


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity: a diverged epoch's value is recorded as null."""
    return value if math.isfinite(value) else None


def execution_complete(result: ExecutionResult, options: FitOptions) -> bool:
    """Whether an execution trained all its epochs or stopped early, even if a stop came with its last."""
    return result.stopped_early or options.initial_epoch + result.epochs_run >= options.epochs


def best_epoch_metrics(results: list[ExecutionResult], initial_epoch: int) -> tuple[dict[str, float], int]:
    """Each execution's metrics at its best epoch, averaged over executions (keras-tuner's rule)."""
    per_execution = []
    for result in results:
        if result.best_epoch is None:
            continue
        index = result.best_epoch - initial_epoch
        per_execution.append({name: values[index] for name, values in result.history.items()})
    if not per_execution:
        return {}, 0
    names = per_execution[0].keys()
    metrics = {name: float(np.mean([m[name] for m in per_execution])) for name in names}
    best_step = max(r.best_epoch or 0 for r in results)
    return metrics, best_step


class _Progress:
    """The on-epoch hook: records history and notices a cancel, a lost lease or a shutdown."""

    def __init__(
        self,
        ctx: WorkerContext,
        job_id: str,
        record: TrialRecord,
        lease: LeaseKeeper,
        spec: JobSpec,
        node: str,
    ) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.record = record
        self.lease = lease
        self.spec = spec
        self._last_write = 0.0
        self.node = node
        self.lease_lost = False
        self.timed_out = False
        self.handed_back = False
        self._started = time.monotonic()
        self.earlier_seconds = 0.0  # spent on the trial by workers before this one (from its checkpoint)
        timeout = spec.limits.trial_timeout_seconds
        self._timeout = timeout if timeout is not None else math.inf
        self._job_deadline = time.monotonic() + search.runtime_left(ctx, job_id, spec)

    def elapsed(self) -> float:
        """Seconds the trial has run, on this worker and on those before it up to its checkpoint."""
        return self.earlier_seconds + time.monotonic() - self._started

    def start_execution(self) -> None:
        self.record.executions.append(ExecutionRecord())

    def __call__(self, epoch: int, logs: dict[str, float]) -> bool:
        history = self.record.executions[-1].history
        for name, value in logs.items():
            history.setdefault(name, []).append(finite_or_none(value))
        now = time.monotonic()
        if self.elapsed() > self._timeout:
            self.timed_out = True
            return True
        if now - self._last_write < _WRITE_EVERY_SECONDS:
            return False
        self._last_write = now
        return self.flush()

    def flush(self) -> bool:
        """Write progress; True when the trial should stop (its job ended, or its lease was lost)."""
        store = self.ctx.store
        if self.lease.lost:
            # Another worker owns the trial now; it records the trial, this one must not.
            self.lease_lost = True
            return True
        if self.node and store.is_draining(self.node):
            self.handed_back = True  # this worker is shutting down: another one trains the trial
            return True
        store.put_trial(self.job_id, self.record)
        status = store.get_status(self.job_id)
        return status is None or status.is_final() or time.monotonic() > self._job_deadline


def run_trial(ctx: WorkerContext, job_id: str, trial_id: str, node: str = "") -> None:
    """Train one trial unless it already ended or another worker holds it; idempotent."""
    store = ctx.store
    record = store.get_trial(job_id, trial_id)
    if record is None or record.status.is_final():
        log.info("trial %s/%s already ended or unknown; nothing to do", job_id, trial_id)
        return
    owner = f"{ctx.worker_name}:{random.randrange(16**8):08x}"
    if not store.acquire_lease(job_id, trial_id, owner, ctx.settings.lease_seconds):
        log.info(
            "trial %s/%s is held by %s; nothing to do", job_id, trial_id, store.lease_holder(job_id, trial_id)
        )
        return
    try:
        with LeaseKeeper(store, job_id, trial_id, owner, ctx.settings.lease_seconds) as lease:
            _run_leased(ctx, job_id, record, lease, node)
    finally:
        release_memory()


def _run_leased(ctx: WorkerContext, job_id: str, record: TrialRecord, lease: LeaseKeeper, node: str) -> None:
    store = ctx.store
    status = store.get_status(job_id)
    spec = load_spec(store, job_id)
    if status is None or status.is_final() or search.runtime_left(ctx, job_id, spec) <= 0:
        _stop_unfinished(ctx, job_id, record)
        return
    losses = store.trial_losses(job_id, record.id)
    if losses >= ctx.settings.trial_max_worker_losses:
        # Most likely the trial itself kills its worker (out of memory); running it again would too.
        lost = _failed(
            "worker_lost",
            f"the worker running this trial was lost {losses} times (killed, out of memory or its machine "
            f"gone); the trial is not run again",
        )
        search.finish_trial(ctx, job_id, record, lost)
        ctx.artifacts.discard_resume(job_id, record.id)
        return
    record = record.model_copy(
        update={
            "status": TrialStatus.RUNNING,
            "started_at": utcnow(),
            "worker": ctx.worker_name,
            "executions": [],
        }
    )
    resume = _usable_checkpoint(ctx, job_id, record.id)
    if resume is not None:
        record.executions = resume.executions
    store.put_trial(job_id, record)
    progress = _Progress(ctx, job_id, record, lease, spec, node)
    if resume is not None:
        progress.earlier_seconds = resume.elapsed_seconds
    outcome = _train_trial(ctx, job_id, spec, record, progress, resume)
    if progress.lease_lost:
        log.warning("trial %s/%s lost its lease; leaving it to its new owner", job_id, record.id)
        return
    if progress.handed_back:
        _hand_back(ctx, job_id, spec, record, lease)
        return
    if outcome is None:
        _stop_unfinished(ctx, job_id, record)
    else:
        search.finish_trial(ctx, job_id, record, outcome)
        ctx.artifacts.discard_resume(job_id, record.id)


def _usable_checkpoint(ctx: WorkerContext, job_id: str, trial_id: str) -> TrialCheckpoint | None:
    """The trial's epoch checkpoint, if it was written by the training loop this worker runs."""
    checkpoint = load_checkpoint(ctx.artifacts.resume_path(job_id, trial_id))
    if checkpoint is None:
        return None
    if checkpoint.current is not None and checkpoint.current.loop != ctx.settings.training_loop:
        log.warning("trial %s/%s starts over: its checkpoint is of another training loop", job_id, trial_id)
        return None
    log.warning("trial %s/%s continues from its checkpoint", job_id, trial_id)
    return checkpoint


def _hand_back(
    ctx: WorkerContext, job_id: str, spec: JobSpec, record: TrialRecord, lease: LeaseKeeper
) -> None:
    """Give a trial back to the queue for another worker (this one is shutting down).

    Its checkpoint, just written, lets the next worker continue from the last epoch trained here.
    """
    queued = record.model_copy(update={"status": TrialStatus.QUEUED, "started_at": None, "worker": None})
    ctx.store.put_trial(job_id, queued)
    # Released before the message goes, since the next owner acts on the message.
    ctx.store.release_lease(job_id, record.id, lease.owner)
    queue.send_run_trial(job_id, record.id, spec.queue)
    log.warning("trial %s/%s handed back: this worker is shutting down", job_id, record.id)


def _stop_unfinished(ctx: WorkerContext, job_id: str, record: TrialRecord) -> None:
    """Record a trial stopped by its job (cancelled, or out of runtime), then let the search end the job."""
    ctx.store.put_trial(job_id, record.cancelled())
    ctx.artifacts.discard_resume(job_id, record.id)
    search.advance(ctx, job_id)


def _failed(code: str, message: str) -> search.TrialOutcome:
    return search.TrialOutcome(TrialStatus.FAILED, {}, None, 0, None, code, message)


def _train_trial(
    ctx: WorkerContext,
    job_id: str,
    spec: JobSpec,
    record: TrialRecord,
    progress: _Progress,
    resume: TrialCheckpoint | None,
) -> search.TrialOutcome | None:
    """Every execution of the trial, continuing from `resume` if given; None when it was cancelled."""
    values: dict[str, Any] = record.hyperparameters
    options = FitOptions(
        epochs=int(values.get("tuner/epochs", spec.training.epochs)),
        initial_epoch=int(values.get("tuner/initial_epoch", 0)),
        batch_size=int(values["batch_size"]),
        monitor=spec.objective_name,
        mode=spec.objective_direction,
        patience=spec.training.early_stopping.patience if spec.training.early_stopping else None,
        min_delta=spec.training.early_stopping.min_delta if spec.training.early_stopping else 0.0,
    )
    results: list[ExecutionResult] = list(resume.finished) if resume else []
    checkpointer = Checkpointer(
        ctx.artifacts.resume_path(job_id, record.id),
        ctx.settings.checkpoint_seconds,
        results,
        record.executions,
        urgent=lambda: progress.handed_back,
        allowed=lambda: not progress.lease.lost,
        elapsed=progress.elapsed,
    )
    model: keras.Model | None = None
    try:
        data = job_arrays(ctx.store, job_id, spec.task)
        for execution in range(len(results), spec.tuner.executions_per_trial):
            keras.utils.set_random_seed(execution_seed(spec, record.id, execution))
            fresh = build_model(spec, values, data)
            if "tuner/trial_id" in values:
                fresh.load_weights(ctx.artifacts.checkpoint_path(job_id, str(values["tuner/trial_id"])))
            model = _model_for_execution(model, fresh, ctx.settings.training_loop)
            state = resume.current if resume is not None and execution == len(resume.finished) else None
            if state is None:
                progress.start_execution()
            else:
                record.executions[-1].resumed_at_epochs.append(state.next_epoch)
            result = _train(model, data, options, progress, ctx.settings.training_loop, checkpointer, state)
            results.append(result)
            record.executions[-1].best_epoch = result.best_epoch
            if progress.timed_out:
                return _failed(
                    "trial_timeout",
                    f"the trial ran longer than limits.trial_timeout_seconds "
                    f"({spec.limits.trial_timeout_seconds} s)",
                )
            if result.cancelled and not (progress.handed_back and execution_complete(result, options)):
                # Stopped mid-execution: a cancel, a lost lease, or a hand-back (with its checkpoint).
                return None
            if progress.handed_back or progress.flush():
                if not progress.handed_back:
                    return None  # the job ended, or the lease was lost
                if execution + 1 < spec.tuner.executions_per_trial:
                    checkpointer.between_executions()
                    return None
                progress.handed_back = False  # every execution is done: record the trial, not hand it back
    except redis.RedisError:
        raise  # the job store, not the trial, failed: the task is retried (worker.tasks)
    except SoftTimeLimitExceeded:
        return _failed(
            "trial_timeout", f"the trial ran longer than {ctx.settings.trial_time_limit_seconds} s"
        )
    # Anything else means these hyperparameters do not train here; TensorFlow raises many types for that
    # (out of memory, invalid arguments ...), so the trial fails with the exception and the search goes on.
    except Exception as exc:
        log.exception("trial %s/%s failed", job_id, record.id)
        return _failed("trial_error", f"{type(exc).__name__}: {exc}")
    metrics, best_step = best_epoch_metrics(results, options.initial_epoch)
    metrics = {name: value for name, value in metrics.items() if math.isfinite(value)}
    objective = metrics.get(spec.objective_name, math.nan)
    if not metrics or not math.isfinite(objective):
        return _failed(
            "objective_nan", f"the objective {spec.objective_name} was NaN or infinite in every epoch"
        )
    candidate = _save_candidate(ctx, job_id, record.id, spec, model, results, objective)
    return search.TrialOutcome(TrialStatus.COMPLETED, metrics, objective, best_step, candidate)


def _save_candidate(
    ctx: WorkerContext,
    job_id: str,
    trial_id: str,
    spec: JobSpec,
    model: keras.Model | None,
    results: list[ExecutionResult],
    objective: float,
) -> Path | None:
    """Save the best execution's best-epoch weights: a hyperband checkpoint; a model if it may be best."""
    if model is None:
        return None
    sign = 1.0 if spec.objective_direction == "min" else -1.0
    scored = [r for r in results if r.best_weights is not None and r.best_value is not None]
    best = min(scored, key=lambda r: sign * (r.best_value or 0.0))
    model.set_weights(best.best_weights)
    if spec.tuner.algorithm == "hyperband":
        model.save_weights(ctx.artifacts.checkpoint_path(job_id, trial_id))
    if not search.could_be_best(spec, objective, search.current_best(ctx, job_id)):
        return None
    path = ctx.artifacts.candidate_model_path(job_id, trial_id)
    model.save(path)
    return path
