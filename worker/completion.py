"""Whether a job's search is complete before max_trials (`tuner.stop_when`): a pure decision over the results
of ended trials, in the order they ended.

What it needs of the past is a `Standing` (the best objective so far, the completed trials since it last
improved, and the criterion that fired, if one did), kept in the job's search state and logged with the
step that took in the trial. A trial's result is taken in once, when the oracle is told (a redelivered
finish finds it told), so no trial counts twice, and a search resumed from its log goes on from the same
standing. Once a criterion fired, the search hands out no new trial; the trials already handed out run to
their end, and the job succeeds when none is left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from service.core.catalog import Direction
from service.core.stop_when import StoppedBy, StopWhen


@dataclass(frozen=True)
class Standing:
    """What the completion criteria know of a search after the trials that ended so far."""

    best: float | None = None  # the best objective of a completed trial
    best_trial: str | None = None
    since_best: int = 0  # completed trials that ended after the best one, none of which beat it
    stopped_by: StoppedBy | None = None

    def to_state(self) -> dict[str, Any]:
        """As JSON-ready data, for the search state."""
        return {
            "best": self.best,
            "best_trial": self.best_trial,
            "since_best": self.since_best,
            "stopped_by": None if self.stopped_by is None else self.stopped_by.model_dump(mode="json"),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> Standing:
        """The standing `to_state` made (None: a search no trial has ended in)."""
        if not state:
            return cls()
        stopped = state.get("stopped_by")
        return cls(
            best=state.get("best"),
            best_trial=state.get("best_trial"),
            since_best=int(state.get("since_best", 0)),
            stopped_by=None if stopped is None else StoppedBy.model_validate(stopped),
        )


def improves(direction: Direction, value: float, best: float | None) -> bool:
    """Whether `value` beats `best` (a tie does not; NaN or infinity never does)."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if direction == "max" else value < best


def reaches(direction: Direction, value: float, target: float) -> bool:
    """Whether `value` is at least `target` (max) or at most `target` (min)."""
    return value >= target if direction == "max" else value <= target


def after_trial(
    rule: StopWhen, direction: Direction, standing: Standing, trial_id: str, value: float | None
) -> Standing:
    """The standing once trial `trial_id` ended with objective `value` (None: it failed, and neither improves
    nor counts toward no_improvement_trials). A standing whose criterion has fired keeps it."""
    if value is None or not math.isfinite(value):
        return standing
    if improves(direction, value, standing.best):
        standing = replace(standing, best=value, best_trial=trial_id, since_best=0)
    else:
        standing = replace(standing, since_best=standing.since_best + 1)
    if standing.stopped_by is not None:
        return standing
    return replace(standing, stopped_by=_fired(rule, direction, standing, trial_id, value))


def _fired(
    rule: StopWhen, direction: Direction, standing: Standing, trial_id: str, value: float
) -> StoppedBy | None:
    target = rule.objective_reaches
    if target is not None and reaches(direction, value, target):
        relation = "at least" if direction == "max" else "at most"
        return StoppedBy(
            criterion="objective_reaches",
            value=target,
            trial=trial_id,
            message=f"trial {trial_id}'s objective {value:g} is {relation} objective_reaches {target:g}",
        )
    patience = rule.no_improvement_trials
    if patience is not None and standing.since_best >= patience:
        return StoppedBy(
            criterion="no_improvement_trials",
            value=patience,
            trial=trial_id,
            message=f"{standing.since_best} completed trials in a row, the last {trial_id}, did not beat the "
            f"best objective {standing.best:g} (trial {standing.best_trial})",
        )
    return None
