"""A Bayesian search's random initial points (`worker.initial_points`), with real keras-tuner oracles.

The README's Bayesian example (`xor-classifier.json`: 8 tuned hyperparameters, 12 trials) must use its
Gaussian process after a few random trials: with keras-tuner's own rule (3 x dimensions, and ktune's
constants counted as dimensions) it sampled all 12 at random, exactly the trials of a random search.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from keras_tuner.src.engine.trial import TrialStatus as KtStatus

from service.core.spec import JobCreate
from worker.initial_points import default_initial_points
from worker.oracles import new_oracle

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def classifier(**tuner: Any) -> JobCreate:
    body = json.loads((EXAMPLES / "xor-classifier.json").read_text())
    body["tuner"].update(tuner)
    return JobCreate.model_validate(body).resolved()


def accuracy_of(values: dict[str, Any]) -> float:
    """A made-up, deterministic val_accuracy of a trial's values: best near a rate of 0.01, two layers."""
    rate = math.log10(values["learning_rate"]) + 2
    return 1.0 - rate**2 / 10 - abs(values["hidden_layers"] - 2) / 10 - values["dropout"]


def suggestions(spec: JobCreate, count: int) -> list[dict[str, Any]]:
    """The values of a search's first `count` trials, run one at a time, each told its made-up accuracy."""
    oracle = new_oracle(spec)
    handed_out = []
    for slot in range(count):
        trial = oracle.create_trial(f"slot-{slot}")
        assert trial.status == KtStatus.RUNNING
        values = dict(trial.hyperparameters.values)
        handed_out.append(values)
        oracle.update_trial(trial.trial_id, {"val_accuracy": accuracy_of(values)}, step=1)
        trial.status = KtStatus.COMPLETED
        oracle.end_trial(trial)
    return handed_out


def differing(spec: JobCreate, count: int) -> list[bool]:
    """For each of the first `count` trials, whether the Bayesian search's values differ from those of a
    random search of the same space and seed."""
    random = spec.model_copy(update={"tuner": spec.tuner.model_copy(update={"algorithm": "random"})})
    return [b != r for b, r in zip(suggestions(spec, count), suggestions(random, count), strict=True)]


@pytest.mark.parametrize(
    ("dimensions", "max_trials", "points"),
    [(8, 12, 3), (8, 10, 3), (8, 40, 10), (8, 100, 24), (8, 1000, 24), (1, 100, 3), (0, 12, 3), (20, 2, 3)],
)
def test_the_default_is_three_per_dimension_up_to_a_quarter_of_the_budget(
    dimensions: int, max_trials: int, points: int
) -> None:
    assert default_initial_points(dimensions, max_trials) == points


def test_the_readme_example_counts_only_its_tuned_hyperparameters() -> None:
    oracle = new_oracle(classifier())
    assert len(oracle.hyperparameters.space) == 8, "batch_size, a constant, is no dimension"
    assert oracle.num_initial_points == default_initial_points(8, 12) == 3


def test_the_readme_example_uses_its_model_after_the_initial_points() -> None:
    # 3 random trials (a random search's own), then the Gaussian process's suggestions.
    assert differing(classifier(), 5) == [False, False, False, True, True]


def test_num_initial_points_sets_how_many_trials_are_random() -> None:
    spec = classifier(num_initial_points=6)
    assert new_oracle(spec).num_initial_points == 6
    assert differing(spec, 7) == [False] * 6 + [True]
