"""What a trained trial comes to: its metrics at the best epoch, its objective, and its candidate model."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from service.core.spec import JobSpec
from service.core.states import TrialStatus
from worker import ranking, search
from worker.context import WorkerContext
from worker.data import JobData, job_data
from worker.executions import ExecutionsRun
from worker.model_builder import make_metric
from worker.training import ExecutionResult


def failed(code: str, message: str) -> search.TrialOutcome:
    """A failed trial's outcome, with a machine-readable code and a sentence."""
    return search.TrialOutcome(TrialStatus.FAILED, {}, None, 0, None, code, message)


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


def trained_outcome(
    ctx: WorkerContext, job_id: str, trial_id: str, spec: JobSpec, run: ExecutionsRun, initial_epoch: int
) -> search.TrialOutcome:
    """The outcome of a trial whose executions all trained: completed, or failed with a NaN objective."""
    metrics, best_step = best_epoch_metrics(run.results, initial_epoch)
    metrics = {name: value for name, value in metrics.items() if math.isfinite(value)}
    objective = metrics.get(spec.objective_name, math.nan)
    if not metrics or not math.isfinite(objective):
        return failed(
            "objective_nan", f"the objective {spec.objective_name} was NaN or infinite in every epoch"
        )
    standing = ranking.Standing(objective, metrics, best_step)
    candidate = _save_candidate(ctx, job_id, trial_id, spec, run, standing)
    return search.TrialOutcome(TrialStatus.COMPLETED, metrics, objective, best_step, candidate)


def _save_candidate(
    ctx: WorkerContext,
    job_id: str,
    trial_id: str,
    spec: JobSpec,
    run: ExecutionsRun,
    standing: ranking.Standing,
) -> Path | None:
    """Save the best execution's best-epoch weights: a hyperband checkpoint; a model if it may be best.

    A hyperband checkpoint holds the optimizer's state too (its moments and step count after the last
    epoch trained; the fast loop keeps no copy of them per epoch), so the trial that continues this one
    goes on with it (`worker.executions.continue_from`)."""
    model = run.model
    if model is None:
        return None
    sign = 1.0 if spec.objective_direction == "min" else -1.0
    scored = [r for r in run.results if r.best_weights is not None and r.best_value is not None]
    best = min(scored, key=lambda r: sign * (r.best_value or 0.0))
    model.set_weights(best.best_weights)
    if spec.tuner.algorithm == "hyperband":
        model.save_weights(ctx.artifacts.checkpoint_path(job_id, trial_id))
        ctx.artifacts.publish(ctx.artifacts.checkpoint_key(job_id, trial_id))
    # The job's best only gets better: a trial that does not beat it now never will.
    if not search.against_best(spec, standing, search.current_best(ctx, job_id)).wins:
        return None
    path = ctx.artifacts.candidate_model_path(job_id, trial_id)
    exported_model(model, job_data(ctx.store, ctx.artifacts, job_id, spec.task), spec).save(path)
    return path


def exported_model(model: keras.Model, data: JobData, spec: JobSpec) -> keras.Model:
    """The trained model as users download it: it takes raw rows (the job's preprocessing inside) and is
    compiled with the job's plain loss and metrics, so `keras.models.load_model` needs nothing of ktune."""
    if data.preprocessing is None:
        return model
    # The same layers as a model that was never compiled: the training model's compiled loss (standardized
    # targets) is ktune's own class, which must not be saved inside the file.
    core = keras.Model(model.input, model.output)
    exported = data.preprocessing.export(core)  # may be `core` itself: it is a model of its own all the same
    exported.compile(loss=spec.loss, metrics=[make_metric(name, spec.task) for name in spec.metrics])
    # With its variables made now, the saved optimizer matches the one load_model builds (no warning).
    exported.optimizer.build(exported.trainable_variables)
    return exported
