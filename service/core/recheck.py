"""Recheck of a job's winner (POST /v1/jobs/{id}/recheck): the request, and the record of the run as the job
shows it (`recheck` on GET /v1/jobs/{id}), with its summary of each retrained trial.

A search ranks trials by one training each (or `tuner.executions_per_trial`): on a small validation set, the
winner may have won by its seed. A recheck retrains the top trials with other seeds (`worker.recheck`) and
reports the spread of the objective per trial, and whether the winner is still the best by its mean.

Pure (no TensorFlow, no Redis): the summary is arithmetic on the values a worker found.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from service.core.job_runs import JobRun
from service.core.params import StrictModel

MAX_TOP_K = 10
MAX_SEEDS = 10


class RecheckRequest(StrictModel):
    """Which trials to retrain, and how often; an empty body is the defaults. Whole JSON numbers only."""

    top_k: int = Field(
        3,
        strict=True,
        ge=1,
        le=MAX_TOP_K,
        description="retrain the job's best `top_k` completed trials, ranked as the job ranks its best "
        "(objective, then its tie-breaker); fewer when fewer completed",
    )
    seeds: int = Field(
        3, strict=True, ge=2, le=MAX_SEEDS, description="trainings of each trial, each with a seed of its own"
    )


class RecheckedTrial(BaseModel):
    """One trial retrained `seeds` times: its objective's value with each seed, and their spread."""

    trial_id: str
    hyperparameters: dict[str, Any]
    constants: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(description="epochs each retraining ran at most: the trial's own epoch count")
    search_objective: float = Field(description="the trial's objective value in the search")
    seeds: list[int] = Field(description="the seed of each retraining")
    values: list[float | None] = Field(
        description="the objective of each retraining (its best value over epochs, as a trial's objective "
        "is), in the order of `seeds`; null where it was NaN or infinite in every epoch"
    )
    mean: float | None = Field(description="of `values` (null ones left out); null when none is a number")
    std: float | None = Field(description="sample standard deviation of `values`; null with fewer than two")
    min: float | None
    max: float | None

    @classmethod
    def of(
        cls,
        trial_id: str,
        hyperparameters: dict[str, Any],
        constants: dict[str, Any],
        epochs: int,
        search_objective: float,
        seeds: list[int],
        values: list[float | None],
    ) -> RecheckedTrial:
        """The trial's summary of `values` (one per seed)."""
        found = [v for v in values if v is not None and math.isfinite(v)]
        return cls(
            trial_id=trial_id,
            hyperparameters=hyperparameters,
            constants=constants,
            epochs=epochs,
            search_objective=search_objective,
            seeds=seeds,
            values=[v if v is not None and math.isfinite(v) else None for v in values],
            mean=statistics.fmean(found) if found else None,
            std=statistics.stdev(found) if len(found) >= 2 else None,
            min=min(found) if found else None,
            max=max(found) if found else None,
        )


class RecheckResult(BaseModel):
    """What a recheck found: each retrained trial, best in the search first, and whether the winner holds."""

    objective: str = Field(description="the job's objective")
    direction: Literal["min", "max"]
    winner: str = Field(description="the search's best trial (`best_trial.id`)")
    best_by_mean: str | None = Field(
        description="the trial with the best mean over its seeds (on equal means, the one the search ranked "
        "higher); null when no retraining gave a number"
    )
    winner_holds: bool = Field(description="the search's winner is still the best by its mean")
    trials: list[RecheckedTrial] = Field(description="in the search's order, its winner first")

    @classmethod
    def of(
        cls, objective: str, direction: Literal["min", "max"], winner: str, trials: list[RecheckedTrial]
    ) -> RecheckResult:
        """The result of `trials` (ranked as the search ranked them)."""
        best = best_by_mean(trials, direction)
        return cls(
            objective=objective,
            direction=direction,
            winner=winner,
            best_by_mean=best,
            winner_holds=best == winner,
            trials=trials,
        )


def best_by_mean(trials: list[RecheckedTrial], direction: Literal["min", "max"]) -> str | None:
    """The id of the trial with the best mean; the earliest in `trials` among equals; None without means."""
    sign = 1.0 if direction == "min" else -1.0
    scored = [(sign * t.mean, index) for index, t in enumerate(trials) if t.mean is not None]
    if not scored:
        return None
    return trials[min(scored)[1]].trial_id


class Recheck(JobRun):
    """A job's latest recheck: its top trials retrained with other seeds, and their objective's spread."""

    noun: ClassVar[str] = "recheck"
    verb: ClassVar[str] = "recheck"
    timeout_setting: ClassVar[str] = "KTUNE_RECHECK_TIMEOUT_SECONDS"

    top_k: int = Field(description="as requested")
    seeds: int = Field(description="as requested")
    result: RecheckResult | None = Field(None, description="once it has succeeded")
