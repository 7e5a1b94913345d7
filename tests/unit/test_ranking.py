"""How a job's best trial is chosen among completed trials (`worker.ranking`): pure rules, no store."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.spec import JobCreate
from worker.ranking import (
    FEWER_EPOCHS,
    FIRST_COMPLETED,
    OBJECTIVE,
    Ranking,
    Standing,
    Verdict,
    chosen_by,
    compare,
    ranked,
)

ACCURACY = Ranking(direction="max", tie_breaker="val_loss", prefer_fewer_epochs=False)


def trial(objective: float, val_loss: float | None = 0.5, best_epoch: int | None = 10) -> Standing:
    metrics = {"val_accuracy": objective} | ({} if val_loss is None else {"val_loss": val_loss})
    return Standing(objective, metrics, best_epoch)


def test_the_first_trial_is_the_best_by_its_objective() -> None:
    assert compare(ACCURACY, trial(0.5), None) == Verdict(True, OBJECTIVE)


@pytest.mark.parametrize(("challenger", "wins"), [(1.0, True), (0.75, False)])
def test_a_better_objective_wins_whatever_the_tie_breaker(challenger: float, wins: bool) -> None:
    verdict = compare(ACCURACY, trial(challenger, val_loss=0.9 if wins else 0.01), trial(0.9, val_loss=0.3))
    assert verdict == Verdict(wins, OBJECTIVE)


@pytest.mark.parametrize(("val_loss", "wins"), [(0.1, True), (0.4, False)])
def test_an_equal_objective_goes_to_the_lower_val_loss(val_loss: float, wins: bool) -> None:
    assert compare(ACCURACY, trial(1.0, val_loss), trial(1.0, 0.3)) == Verdict(wins, "tie_breaker:val_loss")


def test_the_tie_breakers_direction_is_inferred_from_its_name() -> None:
    by_auc = Ranking(direction="min", tie_breaker="val_auc", prefer_fewer_epochs=False)
    higher = Standing(0.2, {"val_auc": 0.9}, 3)
    lower = Standing(0.2, {"val_auc": 0.8}, 3)
    assert compare(by_auc, higher, lower) == Verdict(True, "tie_breaker:val_auc")
    assert compare(by_auc, lower, higher) == Verdict(False, "tie_breaker:val_auc")


def test_a_tie_breaker_value_beats_none() -> None:
    assert compare(ACCURACY, trial(1.0, 0.9), trial(1.0, None)) == Verdict(True, "tie_breaker:val_loss")
    assert compare(ACCURACY, trial(1.0, None), trial(1.0, 0.9)) == Verdict(False, "tie_breaker:val_loss")


@pytest.mark.parametrize(("epochs", "wins"), [(4, True), (12, False)])
def test_fewer_epochs_decide_only_when_asked(epochs: int, wins: bool) -> None:
    asked = Ranking(direction="max", tie_breaker="val_loss", prefer_fewer_epochs=True)
    challenger, incumbent = trial(1.0, 0.3, best_epoch=epochs), trial(1.0, 0.3, best_epoch=8)
    assert compare(asked, challenger, incumbent) == Verdict(wins, FEWER_EPOCHS)
    assert compare(ACCURACY, challenger, incumbent) == Verdict(False, FIRST_COMPLETED)


def test_without_a_tie_breaker_fewer_epochs_come_right_after_the_objective() -> None:
    asked = Ranking(direction="max", tie_breaker=None, prefer_fewer_epochs=True)
    assert compare(asked, trial(1.0, 0.9, best_epoch=2), trial(1.0, 0.1, best_epoch=5)) == Verdict(
        True, FEWER_EPOCHS
    )


def test_unknown_epochs_never_decide() -> None:
    asked = Ranking(direction="max", tie_breaker=None, prefer_fewer_epochs=True)
    assert compare(asked, trial(1.0, best_epoch=2), trial(1.0, best_epoch=None)) == Verdict(
        False, FIRST_COMPLETED
    )


def test_a_complete_tie_keeps_the_first_to_complete() -> None:
    assert compare(ACCURACY, trial(1.0, 0.3), trial(1.0, 0.3)) == Verdict(False, FIRST_COMPLETED)


def test_a_new_best_is_chosen_by_the_rule_it_won_by() -> None:
    assert chosen_by(FIRST_COMPLETED, Verdict(True, OBJECTIVE)) == OBJECTIVE
    assert chosen_by(OBJECTIVE, Verdict(True, "tie_breaker:val_loss")) == "tie_breaker:val_loss"


def test_a_best_that_stays_is_chosen_by_the_finest_rule_that_told_it_apart() -> None:
    assert chosen_by(OBJECTIVE, Verdict(False, "tie_breaker:val_loss")) == "tie_breaker:val_loss"
    assert chosen_by("tie_breaker:val_loss", Verdict(False, OBJECTIVE)) == "tie_breaker:val_loss"
    assert chosen_by("tie_breaker:val_loss", Verdict(False, FEWER_EPOCHS)) == FEWER_EPOCHS
    assert chosen_by(FEWER_EPOCHS, Verdict(False, FIRST_COMPLETED)) == FIRST_COMPLETED


def test_trials_in_any_order_end_with_the_best_of_the_tied() -> None:
    """Trials coming in one at a time, each compared with the best so far, as the search steps do."""
    trials = [trial(0.75, 0.2), trial(1.0, 0.4), trial(1.0, 0.15), trial(1.0, 0.3), trial(0.5, 0.01)]
    best: Standing | None = None
    rule = OBJECTIVE
    for challenger in trials:
        verdict = compare(ACCURACY, challenger, best)
        rule = chosen_by(rule, verdict)
        best = challenger if verdict.wins else best
    assert best == trials[2] and rule == "tie_breaker:val_loss"


def test_ranked_puts_first_the_trial_the_search_keeps_as_its_best() -> None:
    trials = [trial(0.75, 0.2), trial(1.0, 0.4), trial(1.0, 0.15), trial(1.0, 0.3), trial(0.5, 0.01)]
    best: Standing | None = None
    for challenger in trials:
        best = challenger if compare(ACCURACY, challenger, best).wins else best
    order = ranked(ACCURACY, trials)
    assert trials[order[0]] == best
    # Then by the same rules: equal objectives by val_loss, then the lower objectives.
    assert order == [2, 3, 1, 0, 4]


def test_ranked_keeps_complete_ties_in_the_order_they_completed() -> None:
    assert ranked(ACCURACY, [trial(0.5), trial(1.0), trial(0.5), trial(1.0)]) == [1, 3, 0, 2]
    assert ranked(ACCURACY, []) == []


def test_ranked_follows_the_direction_of_the_objective() -> None:
    by_loss = Ranking(direction="min", tie_breaker=None, prefer_fewer_epochs=False)
    losses = [Standing(value, {}, 1) for value in (0.3, 0.1, 0.2)]
    assert ranked(by_loss, losses) == [1, 2, 0]


def _spec(objective: dict[str, Any] | None) -> JobCreate:
    body: dict[str, Any] = {
        "task": "binary_classification",
        "data": {"train": {"x": [[0], [1], [2], [3], [4]], "y": [0, 1, 0, 1, 1]}},
    }
    if objective is not None:
        body["objective"] = objective
    return JobCreate.model_validate(body)


@pytest.mark.parametrize(
    ("objective", "ranking"),
    [
        (None, Ranking("max", "val_loss", False)),
        ({"name": "val_accuracy", "prefer_fewer_epochs": True}, Ranking("max", "val_loss", True)),
        ({"name": "val_accuracy", "tie_breaker": "loss"}, Ranking("max", "loss", False)),
        ({"name": "val_accuracy", "tie_breaker": None}, Ranking("max", None, False)),
        # The objective breaks no tie of its own.
        ({"name": "val_loss"}, Ranking("min", None, False)),
    ],
)
def test_a_jobs_ranking_comes_from_its_objective(objective: dict[str, Any] | None, ranking: Ranking) -> None:
    assert Ranking.of(_spec(objective)) == ranking
    assert Ranking.of(_spec(objective).resolved()) == ranking
