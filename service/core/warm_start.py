"""`tuner.warm_start` resolved when a job is submitted (or validated): the earlier jobs checked, and their
completed trials that fit the new job's search space written into its spec (`WarmStart.trials`), so that the
search is seeded from the spec alone, whether or not the earlier jobs still exist.

A source job must be the tenant's (another tenant's job is answered as a missing one), finished, with at
least one completed trial, and have the same objective name and direction. A trial fits when each of its
values (hyperparameters and constants, as its record shows them) is one the new search could pick
(`service.core.enqueue.checked_values`, tuner.enqueue's check); a job none of whose trials fits is refused,
naming the first value that does not fit and why.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from service.core.enqueue import EnqueueError, checked_values
from service.core.errors import FieldProblem, InvalidRequest
from service.core.records import JobRecord, TrialRecord
from service.core.spec import JobSpec
from service.core.states import TrialStatus
from service.core.store import JobStore
from service.core.warm_start_spec import MAX_SEED_TRIALS, SeedTrial


def with_seed_trials(store: JobStore, spec: JobSpec, tenant: str) -> JobSpec:
    """`spec` with tuner.warm_start's trials resolved (itself when it has no warm_start). Raises
    InvalidRequest naming `tuner.warm_start.jobs[i]` (or `.trials`, given in the request)."""
    warm = spec.tuner.warm_start
    if warm is None:
        return spec
    if warm.trials is not None:
        raise InvalidRequest(
            [FieldProblem("tuner.warm_start.trials", "is filled in by ktune from the jobs: leave it out")]
        )
    seeds: list[SeedTrial] = []
    for index, job_id in enumerate(warm.jobs):
        field = f"tuner.warm_start.jobs[{index}]"
        record = store.get_job(job_id)
        if record is None or record.tenant != tenant:
            raise InvalidRequest(
                [FieldProblem(field, f"no job with id '{job_id}': give a finished job's id")]
            )
        seeds += _seeds_of(store, spec, record, field)
    tuner = spec.tuner.model_copy(
        update={"warm_start": warm.model_copy(update={"trials": best(spec, seeds)})}
    )
    return spec.model_copy(update={"tuner": tuner})


def best(spec: JobSpec, seeds: list[SeedTrial]) -> list[SeedTrial]:
    """`seeds`, or the best MAX_SEED_TRIALS of them by their objective value, in the order they came."""
    if len(seeds) <= MAX_SEED_TRIALS:
        return seeds
    sign = -1 if spec.objective_direction == "max" else 1
    ranked = sorted(range(len(seeds)), key=lambda index: sign * seeds[index].objective_value)
    kept = set(ranked[:MAX_SEED_TRIALS])
    return [seed for index, seed in enumerate(seeds) if index in kept]


def _seeds_of(store: JobStore, spec: JobSpec, record: JobRecord, field: str) -> list[SeedTrial]:
    if not record.status.is_final():
        raise InvalidRequest(
            [
                FieldProblem(
                    field,
                    f"job '{record.id}' is {record.status.value}: warm start takes finished jobs only; wait "
                    "for it to end, or cancel it",
                )
            ]
        )
    source = _spec_of(record, field)
    theirs = (source.objective_name, source.objective_direction)
    ours = (spec.objective_name, spec.objective_direction)
    if theirs != ours:
        raise InvalidRequest(
            [
                FieldProblem(
                    field,
                    f"job '{record.id}' optimised {theirs[0]} ({theirs[1]}), this job {ours[0]} ({ours[1]}): "
                    "warm start needs the same objective and direction; set objective to match, or leave "
                    "the job out",
                )
            ]
        )
    completed = [trial for trial in store.get_trials(record.id, history=False) if _scored(trial)]
    if not completed:
        raise InvalidRequest(
            [FieldProblem(field, f"job '{record.id}' has no completed trial: give a job that completed one")]
        )
    seeds: list[SeedTrial] = []
    first_misfit: EnqueueError | None = None
    for trial in completed:
        try:
            values = seed_values(spec, trial)
        except EnqueueError as exc:
            first_misfit = first_misfit or exc
            continue
        assert trial.objective_value is not None
        seeds.append(
            SeedTrial(
                job_id=record.id, trial_id=trial.id, values=values, objective_value=trial.objective_value
            )
        )
    if not seeds:
        assert first_misfit is not None
        raise InvalidRequest(
            [
                FieldProblem(
                    field,
                    f"none of the {len(completed)} completed trials of job '{record.id}' fits this job's "
                    f"search space; the first misfit, {first_misfit.field}: {first_misfit.message}",
                )
            ]
        )
    return seeds


def seed_values(spec: JobSpec, trial: TrialRecord) -> dict[str, Any]:
    """A completed trial's values (hyperparameters and constants, without keras-tuner's `tuner/` entries)
    checked against `spec`'s search space. Raises EnqueueError, its field `trial <id>.<name>`."""
    values = {
        name: value
        for name, value in {**trial.constants, **trial.hyperparameters}.items()
        if not name.startswith("tuner/")
    }
    return checked_values(spec, f"trial {trial.id}", values)


def _scored(trial: TrialRecord) -> bool:
    value = trial.objective_value
    return trial.status is TrialStatus.COMPLETED and value is not None and math.isfinite(value)


def _spec_of(record: JobRecord, field: str) -> JobSpec:
    try:
        return JobSpec.model_validate(record.spec)
    except ValidationError:
        raise InvalidRequest(
            [FieldProblem(field, f"job '{record.id}' was stored by an older ktune: give a newer job")]
        ) from None
