"""Completion criteria of a search (`tuner.stop_when`: SageMaker's TuningJobCompletionCriteria, Vertex's
stopping spec) and the record of the one that ended a job (`stopped_by`)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

from service.core.params import Float, Int, StrictModel

Criterion = Literal["objective_reaches", "no_improvement_trials"]


class StopWhen(StrictModel):
    """End the search before max_trials once a completed trial reaches a value, or once trials stop
    improving; trials already handed out still run to their end."""

    objective_reaches: Float | None = Field(
        None,
        description="stop once a completed trial's objective is at least this (direction max) or at most "
        "this (direction min)",
    )
    no_improvement_trials: Int | None = Field(
        None,
        ge=1,
        description="stop once this many completed trials in a row did not beat the best objective so far",
    )

    @model_validator(mode="after")
    def _some(self) -> Self:
        if self.objective_reaches is None and self.no_improvement_trials is None:
            raise ValueError(
                "give objective_reaches (a number), no_improvement_trials (1 or more) or both, or leave "
                "stop_when out"
            )
        return self


class StoppedBy(BaseModel):
    """The completion criterion that ended a job's search before its max_trials."""

    criterion: Criterion
    value: int | float = Field(
        description="the criterion's setting: the objective value, or the number of trials"
    )
    trial: str = Field(description="the id of the trial whose result met the criterion")
    message: str
