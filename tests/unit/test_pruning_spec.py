"""`tuner.pruning` in the job request (`service.core.pruning_spec`): defaults, and a 422 naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from service.api.errors import validation_problems
from service.core.spec import JobCreate

BODY: dict[str, Any] = {
    "task": "regression",
    "data": {"train": {"x": [[0, 0], [0, 1], [1, 0], [1, 1], [2, 2]], "y": [0, 1, 1, 0, 4.5]}},
    "training": {"epochs": 8},
}


def job(tuner: dict[str, Any], epochs: int = 8) -> dict[str, Any]:
    body = copy.deepcopy(BODY)
    body["tuner"] = tuner
    body["training"]["epochs"] = epochs
    return body


def problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        JobCreate.model_validate(body)
    return [(p.field, p.message) for p in validation_problems(list(info.value.errors()))]


def test_each_rule_has_its_defaults() -> None:
    median = JobCreate.model_validate(job({"pruning": {"rule": "median"}})).tuner.pruning
    assert median is not None
    assert (median.knob("warmup_epochs"), median.knob("min_trials")) == (0, 3)
    asha = JobCreate.model_validate(job({"pruning": {"rule": "asha"}})).tuner.pruning
    assert asha is not None
    assert [asha.knob(k) for k in ("min_epochs", "reduction_factor", "min_early_stopping_rate")] == [1, 3, 0]
    assert JobCreate.model_validate(job({})).tuner.pruning is None, "off unless asked for"


def test_the_stored_spec_keeps_what_was_asked() -> None:
    spec = JobCreate.model_validate(job({"pruning": {"rule": "asha", "min_epochs": 2}})).resolved()
    dumped = spec.model_dump(mode="json", exclude={"data"})
    assert dumped["tuner"]["pruning"]["rule"] == "asha" and dumped["tuner"]["pruning"]["min_epochs"] == 2


@pytest.mark.parametrize(
    ("pruning", "field", "fragment"),
    [
        ({}, "tuner.pruning.rule", "required"),
        ({"rule": "percentile"}, "tuner.pruning.rule", "median"),
        ({"rule": "median", "reduction_factor": 3}, "tuner.pruning.reduction_factor", "rule 'asha'"),
        ({"rule": "asha", "warmup_epochs": 2}, "tuner.pruning.warmup_epochs", "rule 'median'"),
        ({"rule": "asha", "reduction_factor": 1}, "tuner.pruning.reduction_factor", "greater than or equal"),
        ({"rule": "asha", "min_epochs": 0}, "tuner.pruning.min_epochs", "greater than or equal"),
        ({"rule": "median", "min_trials": True}, "tuner.pruning.min_trials", "true or false"),
        ({"rule": "median", "warmup_epochs": -1}, "tuner.pruning.warmup_epochs", "greater than or equal"),
        ({"rule": "median", "patience": 3}, "tuner.pruning.patience", "not a field"),
    ],
)
def test_a_bad_knob_is_a_422_naming_it(pruning: dict[str, Any], field: str, fragment: str) -> None:
    found = problems(job({"pruning": pruning}))
    assert [f for f, _ in found] == [field], found
    assert fragment in found[0][1]


def test_a_rule_that_could_never_stop_a_trial_is_refused() -> None:
    found = problems(job({"pruning": {"rule": "median", "warmup_epochs": 8}}, epochs=8))
    assert found[0][0] == "tuner.pruning.warmup_epochs" and "epoch 9" in found[0][1]
    found = problems(job({"pruning": {"rule": "asha", "min_epochs": 3, "min_early_stopping_rate": 1}}))
    assert found[0][0] == "tuner.pruning.min_epochs" and "epoch 9" in found[0][1]
    JobCreate.model_validate(job({"pruning": {"rule": "median", "warmup_epochs": 7}}, epochs=8))
    JobCreate.model_validate(job({"pruning": {"rule": "asha", "min_epochs": 8}}, epochs=8))


def test_median_with_min_trials_of_every_trial_is_refused() -> None:
    found = problems(job({"max_trials": 3, "pruning": {"rule": "median"}}))  # min_trials 3 by default
    assert found[0][0] == "tuner.pruning.min_trials"
    assert "lower min_trials below tuner.max_trials" in found[0][1]
    JobCreate.model_validate(job({"max_trials": 3, "pruning": {"rule": "median", "min_trials": 2}}))
    JobCreate.model_validate(job({"max_trials": 3, "pruning": {"rule": "asha"}}))


def test_pruning_with_hyperband_is_refused_with_the_fix() -> None:
    found = problems(job({"algorithm": "hyperband", "pruning": {"rule": "median"}}))
    assert found == [
        (
            "tuner.pruning",
            "hyperband stops poor trials itself (its brackets); remove tuner.pruning, or use it with "
            "algorithm random, grid, bayesian, tpe or cmaes",
        )
    ]
    for algorithm in ("random", "grid", "bayesian"):
        JobCreate.model_validate(job({"algorithm": algorithm, "pruning": {"rule": "asha"}}))
