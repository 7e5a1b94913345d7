"""Recheck of a job's winner (POST /v1/jobs/{id}/recheck): its top completed trials, ranked by the job's own
rules (`worker.ranking`), each retrained `seeds` times with seeds none of the search used
(`worker.executions.recheck_seeds`), the objective of each training recorded and summarized
(`service.core.recheck`).

Each training is a trial's execution again: the trial's hyperparameters and the job's constants, built by
the trials' builder, trained on the job's training rows and validated on its validation rows for the
trial's epoch count (a hyperband trial's `tuner/epochs`, from scratch: a continued trial's starting weights
were another trial's), with the job's early stopping. Its objective is its best value over epochs, as a
trial's is. Nothing is stored but the job's `recheck`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from functools import partial
from typing import Any

from service.core.job_runs import RunStatus
from service.core.recheck import Recheck, RecheckedTrial, RecheckResult
from service.core.records import TrialRecord, utcnow
from service.core.spec import JobSpec
from service.core.states import TrialStatus
from service.core.store_runs import Rechecks
from worker import job_runs, keras_state, ranking
from worker.context import WorkerContext, load_spec
from worker.data import JobData, job_data
from worker.executions import fit_options, model_for_execution, recheck_seeds, train_execution
from worker.model_builder import build_model
from worker.model_cache import traced_model
from worker.search import public_values
from worker.stops import StopReason
from worker.training import FitOptions


def recheck(ctx: WorkerContext, job_id: str, run_id: str) -> None:
    """Run the job's recheck `run_id` unless it was replaced or has ended; its outcome is stored."""
    timeout = ctx.settings.recheck_timeout_seconds
    job_runs.execute(Rechecks(ctx.store), job_id, run_id, timeout, partial(_run, ctx, job_id))


def top_trials(spec: JobSpec, trials: list[TrialRecord], k: int, winner: str) -> list[TrialRecord]:
    """The `k` best completed trials by the job's ranking, its best trial (`winner`) first."""
    standings = {
        t.id: ranking.Standing(t.objective_value, t.metrics, _best_step(t))
        for t in trials
        if t.status is TrialStatus.COMPLETED and t.objective_value is not None
    }
    completed = sorted(  # in the order the search saw them end
        (t for t in trials if t.id in standings), key=lambda t: (t.finished_at or utcnow(), t.id)
    )
    ranks = ranking.ranked(ranking.Ranking.of(spec), [standings[t.id] for t in completed])
    order = [completed[i] for i in ranks]
    # The search's best is first by the same rules; kept first even where a rule could not tell (a trial
    # stored before its tie-breaker was), so that the winner is always rechecked.
    order.sort(key=lambda t: t.id != winner)
    return order[:k]


def _best_step(trial: TrialRecord) -> int | None:
    """The trial's best epoch as its search ranked it: the latest over its executions."""
    if not trial.executions:
        return None
    return max(e.best_epoch or 0 for e in trial.executions)


def _run(ctx: WorkerContext, job_id: str, record: Recheck) -> dict[str, Any]:
    """Retrain the top trials; the recheck's new fields."""
    job = ctx.store.get_job(job_id)
    if job is None or job.best is None:
        raise job_runs.RunFailed("no_completed_trial", f"job '{job_id}' has no completed trial to recheck")
    spec = load_spec(ctx.store, job_id)
    chosen = top_trials(spec, ctx.store.get_trials(job_id, history=False), record.top_k, job.best.trial_id)
    data = job_data(ctx.store, ctx.artifacts, job_id, spec.task)
    rechecked = [_recheck_trial(ctx, job_id, spec, data, trial, record) for trial in chosen]
    result = RecheckResult.of(spec.objective_name, spec.objective_direction, job.best.trial_id, rechecked)
    return {"status": RunStatus.SUCCEEDED, "result": result}


def _recheck_trial(
    ctx: WorkerContext, job_id: str, spec: JobSpec, data: JobData, trial: TrialRecord, record: Recheck
) -> RecheckedTrial:
    """The trial retrained once per seed of the recheck's, summarized."""
    seeds = recheck_seeds(spec, trial.id, record.seeds)
    values = retrain(ctx, job_id, spec, data, trial, seeds, record.deadline_at)
    return RecheckedTrial.of(
        trial_id=trial.id,
        hyperparameters=public_values(trial.hyperparameters),
        constants=trial.constants,
        epochs=_options(spec, trial).epochs,
        search_objective=float(trial.objective_value or 0.0),  # a completed trial's, never None
        seeds=seeds,
        values=values,
    )


def retrain(
    ctx: WorkerContext,
    job_id: str,
    spec: JobSpec,
    data: JobData,
    trial: TrialRecord,
    seeds: list[int],
    deadline: datetime,
) -> list[float | None]:
    """The trial's objective trained again with each seed (None: NaN or infinite in every epoch); with the
    seed of one of its executions, that execution's. Raises RunFailed past `deadline` or once the job is
    gone."""
    options, values, loop = _options(spec, trial), trial.hyperparameters, ctx.settings.training_loop
    # Like a trial's executions, the trainings share one traced model (`worker.model_cache`): the one this
    # process kept from the search, if it did, and keep it for the next trial with the same layers.
    found: list[float | None] = []
    build = partial(build_model, spec, values, data.train, units=data.units, target_scale=data.target_scale)
    with traced_model(job_id, spec, values, loop) as kept:
        for seed in seeds:
            if ctx.store.get_status(job_id) is None:
                raise job_runs.RunFailed("job_deleted", f"job '{job_id}' was deleted")
            keras_state.set_random_seed(seed, loop)
            fresh = build()
            model = kept.model = model_for_execution(kept.model, fresh, loop, build, data.train)
            result = train_execution(model, data.train, options, partial(_past, deadline), loop)
            if result.stopped_by is StopReason.TIMED_OUT:
                raise job_runs.RunFailed(
                    "timed_out",
                    f"the recheck did not end by its deadline ({Recheck.timeout_setting} after it started): "
                    f"stopped while training trial {trial.id}; recheck fewer trials or seeds",
                )
            found.append(result.best_value)
    return found


def _options(spec: JobSpec, trial: TrialRecord) -> FitOptions:
    """What each retraining trains for: the trial's own options, from its first epoch."""
    return dataclasses.replace(fit_options(spec, trial.hyperparameters), initial_epoch=0)


def _past(deadline: datetime, epoch: int, logs: dict[str, float]) -> StopReason | None:
    """Stops a training once the recheck's deadline has passed."""
    return StopReason.TIMED_OUT if utcnow() > deadline else None
