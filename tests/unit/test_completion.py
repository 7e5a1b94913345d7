"""The completion criteria's decision (`worker.completion`): pure, over results in the order trials ended."""

from __future__ import annotations

import json

import pytest

from service.core.catalog import Direction
from service.core.stop_when import StopWhen
from worker.completion import Standing, after_trial


def run(rule: StopWhen, direction: Direction, values: list[float | None]) -> Standing:
    """The standing after trials "00", "01" ... ended with `values` (None: failed), through JSON each time as
    the search state keeps it."""
    standing = Standing()
    for index, value in enumerate(values):
        standing = after_trial(rule, direction, standing, f"{index:02d}", value)
        standing = Standing.from_state(json.loads(json.dumps(standing.to_state())))
    return standing


def test_objective_reaches_fires_on_the_first_trial_at_the_target_for_max() -> None:
    rule = StopWhen(objective_reaches=0.9)
    assert run(rule, "max", [0.5, 0.89]).stopped_by is None
    stopped = run(rule, "max", [0.5, 0.9, 0.95]).stopped_by
    assert stopped is not None
    assert (stopped.criterion, stopped.value, stopped.trial) == ("objective_reaches", 0.9, "01")
    assert "trial 01" in stopped.message and "at least" in stopped.message


def test_objective_reaches_for_min_means_at_most() -> None:
    rule = StopWhen(objective_reaches=0.1)
    assert run(rule, "min", [0.5, 0.2, 0.11]).stopped_by is None
    stopped = run(rule, "min", [0.5, 0.1]).stopped_by
    assert stopped is not None and stopped.trial == "01" and "at most" in stopped.message
    assert run(StopWhen(objective_reaches=0.9), "min", [0.95]).stopped_by is None, "above the target for min"


def test_no_improvement_counts_completed_trials_since_the_best() -> None:
    rule = StopWhen(no_improvement_trials=3)
    # 0.5 best, 0.4 and 0.5 (a tie is no improvement), then 0.6 improves: the count starts again.
    assert run(rule, "max", [0.5, 0.4, 0.5, 0.6, 0.1, 0.2]).stopped_by is None
    stopped = run(rule, "max", [0.5, 0.4, 0.5, 0.6, 0.1, 0.2, 0.6]).stopped_by
    assert stopped is not None
    assert (stopped.criterion, stopped.value, stopped.trial) == ("no_improvement_trials", 3, "06")
    assert "best objective 0.6 (trial 03)" in stopped.message


def test_failed_trials_neither_improve_nor_count() -> None:
    rule = StopWhen(no_improvement_trials=2)
    standing = run(rule, "min", [0.5, None, 0.7, None, float("nan")])
    assert (standing.best, standing.best_trial, standing.since_best) == (0.5, "00", 1)
    assert standing.stopped_by is None
    assert run(rule, "min", [None, None, None]) == Standing()


def test_the_first_criterion_to_fire_is_kept() -> None:
    rule = StopWhen(objective_reaches=0.99, no_improvement_trials=1)
    first = run(rule, "max", [0.5, 0.4])
    assert first.stopped_by is not None and first.stopped_by.criterion == "no_improvement_trials"
    later = run(rule, "max", [0.5, 0.4, 1.0])
    assert later.stopped_by == first.stopped_by, "a trial in flight when it fired does not change it"
    assert later.best == 1.0, "but its result still counts toward the best"


@pytest.mark.parametrize("direction", ["min", "max"])
def test_either_criterion_may_end_the_search(direction: Direction) -> None:
    target, worse = (0.1, 0.5) if direction == "min" else (0.9, 0.5)
    rule = StopWhen(objective_reaches=target, no_improvement_trials=2)
    reached = run(rule, direction, [worse, target]).stopped_by
    assert reached is not None and reached.criterion == "objective_reaches"
    stale = run(rule, direction, [worse, worse, worse]).stopped_by
    assert stale is not None and stale.criterion == "no_improvement_trials" and stale.trial == "02"


def test_a_standing_goes_through_json_unchanged() -> None:
    standing = run(StopWhen(objective_reaches=1.0), "max", [0.25, 1.0])
    assert Standing.from_state(json.loads(json.dumps(standing.to_state()))) == standing
    assert Standing.from_state(None) == Standing() == Standing.from_state({})
