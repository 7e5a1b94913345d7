"""`tuner.warm_start` (SageMaker's warm start with IDENTICAL_DATA_AND_ALGORITHM, Vertex's): earlier jobs
whose completed trials seed the search before it samples, and those trials as resolved when it was submitted
(`service.core.warm_start`), so that workers need not read the earlier jobs."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import Field, StringConstraints, model_validator

from service.core.params import Float, StrictModel

MAX_WARM_START_JOBS = 5
# Seeded trials at most, in all: a Bayesian search refits its Gaussian process on every completed trial at
# each hand-out (measured on a loaded 2-core machine: ~9 s with 16 or 200 seeded trials, 40 s with 500, 92 s
# with 1,000); past this only the best are kept.
MAX_SEED_TRIALS = 200

# keras-tuner's hyperband trains each trial in its brackets (from scratch or continued); the grid walks every
# combination whatever it knows: neither takes earlier results in.
NO_WARM_START = frozenset({"hyperband", "grid"})


JobId = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class SeedTrial(StrictModel):
    """A completed trial of an earlier job, as it seeds this search: its values checked against this job's
    space, and its objective value."""

    job_id: str
    trial_id: str
    values: dict[str, Any]
    objective_value: Float


class WarmStart(StrictModel):
    """Seed the search with the completed trials of up to 5 finished jobs of the same tenant and objective."""

    jobs: list[JobId] = Field(min_length=1, max_length=MAX_WARM_START_JOBS)
    trials: list[SeedTrial] | None = Field(
        None,
        description="filled in by ktune when the job is submitted: the earlier jobs' completed trials that "
        "fit this job's search space (leave it out of requests)",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if len(set(self.jobs)) != len(self.jobs):
            from service.core.spec import SpecError  # spec imports this module

            raise SpecError("tuner.warm_start.jobs", "lists a job twice: give each job id once")
        return self
