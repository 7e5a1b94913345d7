"""Which of two completed trials is better, and by which rule: how a job's best trial is chosen.

Rules, in order: the objective; between equal objective values, the tie-breaker metric
(`objective.tie_breaker`, `val_loss` by default); then, only with `objective.prefer_fewer_epochs`, the
trial that reached its best epoch sooner; then the first to complete. Small validation sets make ties
common (many trials reach `val_accuracy` 1.0), and without a rule the first trial to get there won.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cmp_to_key

from service.core.catalog import Direction, metric_direction
from service.core.records import BestTrial
from service.core.spec import JobSpec

OBJECTIVE = "objective"
FEWER_EPOCHS = "fewer_epochs"
FIRST_COMPLETED = "first_completed"
_TIE_BREAKER = "tie_breaker:"


@dataclass(frozen=True)
class Ranking:
    """A job's rules for ranking trials."""

    direction: Direction
    tie_breaker: str | None
    prefer_fewer_epochs: bool

    @classmethod
    def of(cls, spec: JobSpec) -> Ranking:
        objective = spec.objective
        tie_breaker = objective.tie_breaker if objective is not None else "val_loss"
        return cls(
            direction=spec.objective_direction,
            tie_breaker=None if tie_breaker == spec.objective_name else tie_breaker,
            prefer_fewer_epochs=objective is not None and objective.prefer_fewer_epochs,
        )


@dataclass(frozen=True)
class Standing:
    """What ranks a completed trial: its objective value, its metrics at its best epoch, and that epoch."""

    objective: float
    metrics: Mapping[str, float]
    best_epoch: int | None

    @classmethod
    def of_best(cls, best: BestTrial) -> Standing:
        return cls(best.objective_value, best.metrics, best.best_epoch)


@dataclass(frozen=True)
class Verdict:
    """Whether the challenger beats the incumbent, and the first rule that told them apart."""

    wins: bool
    rule: str


def _better(value: float | None, other: float | None, direction: Direction) -> bool | None:
    """True or False when the values differ (a value beats none), None when they are equal."""
    if value == other:
        return None
    if other is None:
        return True
    if value is None:
        return False
    return value < other if direction == "min" else value > other


def compare(ranking: Ranking, challenger: Standing, incumbent: Standing | None) -> Verdict:
    """Whether `challenger`, which completed later, beats `incumbent` (None: there is none yet)."""
    if incumbent is None:
        return Verdict(True, OBJECTIVE)
    better = _better(challenger.objective, incumbent.objective, ranking.direction)
    if better is not None:
        return Verdict(better, OBJECTIVE)
    if ranking.tie_breaker is not None:
        name = ranking.tie_breaker
        better = _better(challenger.metrics.get(name), incumbent.metrics.get(name), metric_direction(name))
        if better is not None:
            return Verdict(better, _TIE_BREAKER + name)
    if ranking.prefer_fewer_epochs and None not in (challenger.best_epoch, incumbent.best_epoch):
        better = _better(challenger.best_epoch, incumbent.best_epoch, "min")
        if better is not None:
            return Verdict(better, FEWER_EPOCHS)
    return Verdict(False, FIRST_COMPLETED)


def _depth(rule: str) -> int:
    if rule.startswith(_TIE_BREAKER):
        return 1
    return {OBJECTIVE: 0, FEWER_EPOCHS: 2, FIRST_COMPLETED: 3}.get(rule, 0)


def chosen_by(current: str, verdict: Verdict) -> str:
    """The rule that chooses the best trial after a comparison, given the rule that chose it before.

    A new best is chosen by the rule it won by. A best that stays is chosen by the finest rule that has
    told it apart from a challenger: it won a tie on the objective by its `val_loss`, say.
    """
    if verdict.wins:
        return verdict.rule
    return verdict.rule if _depth(verdict.rule) > _depth(current) else current


def ranked(ranking: Ranking, standings: Sequence[Standing]) -> list[int]:
    """The indices of `standings`, given in the order their trials completed, best first: the order in which
    the job's rules choose a best trial (the first of the list is the one a search keeps as its best)."""

    def order(a: int, b: int) -> int:
        earlier, later = min(a, b), max(a, b)
        if earlier == later:
            return 0
        winner = later if compare(ranking, standings[later], standings[earlier]).wins else earlier
        return -1 if winner == a else 1

    return sorted(range(len(standings)), key=cmp_to_key(order))
