"""`tuner.pruning`: which rule stops a trial while it trains, once it cannot win, and that rule's knobs.

One model for both rules (not a union tagged by `rule`), so a 422 names `tuner.pruning.<knob>` whatever
the rule; a knob of the other rule is refused by name. The rules themselves are `worker.pruning`'s.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from service.core.params import Int, StrictModel

PruningRule = Literal["median", "asha"]

# Each rule's knobs and their defaults. median: Optuna's MedianPruner (n_warmup_steps 0), with Katib's
# minimum of 3 completed trials (Optuna's n_startup_trials is 5, most of a small budget). asha: Optuna's
# SuccessiveHalvingPruner with an explicit minimum resource and the reduction factor of Hyperband here (3).
_DEFAULTS: dict[str, dict[str, int]] = {
    "median": {"warmup_epochs": 0, "min_trials": 3},
    "asha": {"min_epochs": 1, "reduction_factor": 3, "min_early_stopping_rate": 0},
}


class PruningSpec(StrictModel):
    """Stop a trial while it trains once the rule says it cannot win (Optuna's pruners)."""

    rule: PruningRule = Field(
        description="'median': stop a trial whose best value so far is worse than the median of completed "
        "trials at the same epoch; 'asha': asynchronous successive halving, a trial goes on past a rung only "
        "in the best 1/reduction_factor of the trials that reached it"
    )
    warmup_epochs: Int | None = Field(
        None, ge=0, description="median: epochs a trial trains before it can be stopped (0)"
    )
    min_trials: Int | None = Field(
        None, ge=1, description="median: trials that trained to their end before any trial is stopped (3)"
    )
    min_epochs: Int | None = Field(None, ge=1, description="asha: the epochs of the first rung (1)")
    reduction_factor: Int | None = Field(
        None, ge=2, le=100, description="asha: rungs at min_epochs x reduction_factor^k epochs (3)"
    )
    min_early_stopping_rate: Int | None = Field(
        None, ge=0, le=30, description="asha: the first rung is at min_epochs x reduction_factor^this (0)"
    )

    @model_validator(mode="after")
    def _knobs_of_rule(self) -> Self:
        from service.core.spec import SpecError  # spec imports this module

        for rule, knobs in _DEFAULTS.items():
            if rule == self.rule:
                continue
            for knob in knobs:
                if getattr(self, knob) is not None:
                    raise SpecError(
                        f"tuner.pruning.{knob}",
                        f"{knob} is a knob of rule '{rule}', not of '{self.rule}': remove it, or set rule "
                        f"to '{rule}'",
                    )
        return self

    def knob(self, name: str) -> int:
        """A knob of this rule, its default when left out."""
        value = getattr(self, name)
        return int(value) if value is not None else _DEFAULTS[self.rule][name]

    def first_judged_epoch(self) -> int:
        """The first epoch (counting from 1) at which this rule can stop a trial."""
        if self.rule == "median":
            return self.knob("warmup_epochs") + 1
        factor, rate = self.knob("reduction_factor"), self.knob("min_early_stopping_rate")
        first: int = self.knob("min_epochs") * factor**rate
        return first


def pruning_problem(
    pruning: PruningSpec | None, algorithm: str, epochs: int, max_trials: int
) -> tuple[str, str] | None:
    """(field, message) when `tuner.pruning` cannot work with the rest of the job; None when it can."""
    if pruning is None:
        return None
    if algorithm == "hyperband":
        return (
            "tuner.pruning",
            "hyperband stops poor trials itself (its brackets); remove tuner.pruning, or use it with "
            "algorithm random, grid, bayesian, tpe or cmaes",
        )
    if pruning.rule == "median" and pruning.knob("min_trials") >= max_trials:
        return (
            "tuner.pruning.min_trials",
            f"{pruning.knob('min_trials')} trials (min_trials) must train to their end before any is "
            f"stopped, and the job runs {max_trials}: none would ever be stopped; lower min_trials below "
            "tuner.max_trials",
        )
    first = pruning.first_judged_epoch()
    if first > epochs:
        knobs = "warmup_epochs" if pruning.rule == "median" else "min_epochs"
        return (
            f"tuner.pruning.{knobs}",
            f"rule '{pruning.rule}' would first judge a trial at epoch {first}, after the last of "
            f"training.epochs ({epochs}): no trial would ever be stopped; lower {knobs} or train more epochs",
        )
    return None
