"""A trial's executions: train each one, continuing from a checkpoint, until done or told to stop."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import keras

from service.core.artifacts import ArtifactStore
from service.core.records import TrialRecord
from service.core.spec import JobSpec
from worker import keras_state
from worker.checkpoints import Checkpointer, TrialCheckpoint
from worker.constants import configuration
from worker.context import WorkerContext
from worker.data import job_data
from worker.model_builder import build_model
from worker.model_cache import traced_model
from worker.progress import TrialProgress
from worker.stops import StopReason
from worker.training import (
    CheckpointHook,
    EpochCallback,
    ExecutionResult,
    ExecutionState,
    FitOptions,
    TrainData,
    fit_execution,
)


@dataclass
class ExecutionsRun:
    """What training a trial's executions came to: their results, and why it stopped early, if it did."""

    results: list[ExecutionResult]
    model: keras.Model | None
    stop: StopReason | None  # None: every execution was trained to its end


def fit_options(spec: JobSpec, values: dict[str, Any]) -> FitOptions:
    """What each execution of a trial with these hyperparameter values trains for."""
    values = configuration(spec, values)
    stopping = spec.training.early_stopping
    return FitOptions(
        epochs=int(values.get("tuner/epochs", spec.training.epochs)),
        initial_epoch=int(values.get("tuner/initial_epoch", 0)),
        batch_size=int(values["batch_size"]),
        monitor=spec.objective_name,
        mode=spec.objective_direction,
        patience=stopping.patience if stopping else None,
        min_delta=stopping.min_delta if stopping else 0.0,
    )


def execution_seed(spec: JobSpec, trial_id: str, execution: int) -> int:
    """Reproducible per trial and execution when the job has a seed; random otherwise."""
    if spec.tuner.seed is None:
        return random.randrange(2**31)
    return (spec.tuner.seed * 1_000_003 + int(trial_id) * 1_009 + execution) % 2**31


def continue_from(model: keras.Model, artifacts: ArtifactStore, job_id: str, trial_id: str) -> None:
    """Load a hyperband trial's saved weights and optimizer state into `model`, to train it on.

    The optimizer is built first: Keras loads an optimizer's moments and step count only into one with
    variables of its own, and otherwise skips them with a warning (the trial would go on from its
    weights with the optimizer restarted, as keras-tuner's own Hyperband does under Keras 3).
    """
    model.optimizer.build(model.trainable_variables)
    with artifacts.fetched(artifacts.checkpoint_key(job_id, trial_id)) as weights:
        model.load_weights(weights)


def recheck_seeds(spec: JobSpec, trial_id: str, count: int) -> list[int]:
    """Seeds of `count` more trainings of a trial (POST /v1/jobs/{id}/recheck), none of the search's own.

    They are the seeds of the executions after the trial's last: reproducible with a job seed, and unlike
    any execution's of any trial of the job while executions_per_trial + count stays below 1,009 (a
    trial's seeds are 1,009 apart from the next one's). Random without a job seed, like the search's.
    """
    first = spec.tuner.executions_per_trial
    return [execution_seed(spec, trial_id, first + index) for index in range(count)]


def execution_complete(result: ExecutionResult, options: FitOptions) -> bool:
    """Whether an execution trained all its epochs or stopped early, even if a stop came with its last."""
    return result.stopped_early or options.initial_epoch + result.epochs_run >= options.epochs


def train_executions(
    ctx: WorkerContext,
    job_id: str,
    spec: JobSpec,
    record: TrialRecord,
    progress: TrialProgress,
    resume: TrialCheckpoint | None,
) -> ExecutionsRun:
    """Every execution of the trial, continuing from `resume` if given, until done or a stop.

    On a shutdown, an execution under way stops with its checkpoint written (the trainer's hook writes it
    at once); between executions a checkpoint with none under way is written here. A shutdown after the
    last execution is no stop: the trial is done. Training errors propagate.

    With the fast loop, a model this process traced for an earlier trial with the same layers (whatever
    their units) is trained again (`worker.model_cache`), exactly as a fresh one would be, and kept for the
    next; the run's model is a plain one of the trial's own widths with the values trained.
    """
    values: dict[str, Any] = record.hyperparameters
    options = fit_options(spec, values)
    results: list[ExecutionResult] = list(resume.finished) if resume else []
    checkpointer = Checkpointer(
        ctx.artifacts.resume_path(job_id, record.id),
        ctx.settings.checkpoint_seconds,
        results,
        record.executions,
        urgent=lambda: progress.stop is StopReason.SHUTDOWN,
        allowed=lambda: not progress.lease.lost,
        elapsed=progress.elapsed,
        publish=partial(ctx.artifacts.publish, ctx.artifacts.resume_key(job_id, record.id)),
    )
    prepared = job_data(ctx.store, ctx.artifacts, job_id, spec.task)
    data = prepared.train
    executions = spec.tuner.executions_per_trial
    loop = ctx.settings.training_loop
    model: keras.Model | None = None  # trained here: none when every execution finished before
    build = partial(build_model, spec, values, data, units=prepared.units, target_scale=prepared.target_scale)
    with traced_model(job_id, spec, values, loop) as kept:
        for execution in range(len(results), executions):
            keras_state.set_random_seed(execution_seed(spec, record.id, execution), loop)
            fresh = build()
            if "tuner/trial_id" in values:
                continue_from(fresh, ctx.artifacts, job_id, str(values["tuner/trial_id"]))
            trainer = kept.model = model_for_execution(kept.model, fresh, loop, build, data)
            state = resume.current if resume is not None and execution == len(resume.finished) else None
            if state is None:
                progress.start_execution()
            else:
                record.executions[-1].resumed_at_epochs.append(state.next_epoch)
            result = train_execution(trainer, data, options, progress, loop, checkpointer, state)
            model = trained_model(trainer, fresh)
            results.append(result)
            record.executions[-1].best_epoch = result.best_epoch
            stop = result.stopped_by or progress.check()
            if stop is StopReason.SHUTDOWN and execution_complete(result, options):
                if execution + 1 == executions:
                    return ExecutionsRun(results, model, None)
                checkpointer.between_executions()
            if stop is not None:
                return ExecutionsRun(results, model, stop)
        return ExecutionsRun(results, model, None)


def train_execution(
    model: keras.Model,
    data: TrainData,
    options: FitOptions,
    on_epoch: EpochCallback,
    loop: str,
    checkpoint: CheckpointHook | None = None,
    resume: ExecutionState | None = None,
) -> ExecutionResult:
    """One execution by the training loop `loop` (KTUNE_TRAINING_LOOP): `fast` or `fit`."""
    if loop == "fast":
        from worker.fast_training import fast_fit_execution

        return fast_fit_execution(model, data, options, on_epoch, checkpoint, resume)
    return fit_execution(model, data, options, on_epoch, checkpoint, resume)


def model_for_execution(
    kept: keras.Model | None,
    fresh: keras.Model,
    loop: str,
    build: Callable[..., keras.Model],
    data: TrainData,
) -> keras.Model:
    """The model to train as `fresh`: with the fast loop, `kept` (a traced model of the same depth) or a
    new one from `build(elastic=True)` (`build` being `build_model` for the trial), either made to train
    exactly as `fresh` would (`fast_training.trainer_for`); `fresh` itself with the fit loop. Hand its
    values back with `trained_model`."""
    if loop != "fast":
        return fresh
    from worker.fast_training import trainer_for

    return trainer_for(kept, fresh, partial(build, elastic=True), data)


def trained_model(trainer: keras.Model, fresh: keras.Model) -> keras.Model:
    """`fresh` with the weights and optimizer state that `trainer` (from `model_for_execution`) trained to:
    a model of the trial's own widths, to save and export."""
    if trainer is fresh:
        return fresh
    from worker.elastic_models import unload

    return unload(trainer, fresh)
