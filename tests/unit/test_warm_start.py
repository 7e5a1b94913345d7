"""tuner.warm_start's spec and compatibility check (`service.core.warm_start`, `warm_start_spec`): whether an
earlier trial fits a job's search space. Resolving jobs from the store is tested end to end
(tests/integration/test_warm_start.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.api.errors import invalid_request
from service.core.enqueue import EnqueueError
from service.core.records import TrialRecord
from service.core.spec import JobCreate
from service.core.states import TrialStatus
from service.core.warm_start import best, seed_values
from service.core.warm_start_spec import MAX_SEED_TRIALS, SeedTrial

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def classifier(**changes: Any) -> JobCreate:
    """The README's classifier (1-3 layers of 8-128 units step 8, relu/tanh, dropout 0-0.3 step 0.1,
    adam/rmsprop, log rate 1e-4..0.05, batch size 4), with `changes` to its model."""
    body: dict[str, Any] = json.loads((EXAMPLES / "xor-classifier.json").read_text())
    body["model"].update(changes)
    return JobCreate.model_validate(body)


def trial(**hyperparameters: Any) -> TrialRecord:
    values = {
        "hidden_layers": 2,
        "units_0": 64,
        "units_1": 16,
        "activation": "tanh",
        "dropout": 0.1,
        "optimizer": "adam",
        "learning_rate": 0.003,
        **hyperparameters,
    }
    return TrialRecord(
        id="03",
        status=TrialStatus.COMPLETED,
        hyperparameters=values,
        constants={"batch_size": 4},
        objective_value=1.0,
    )


def misfit(spec: JobCreate, record: TrialRecord) -> EnqueueError:
    with pytest.raises(EnqueueError) as caught:
        seed_values(spec, record)
    return caught.value


def test_a_fitting_trial_keeps_its_values_and_constants_without_keras_tuners_entries() -> None:
    values = seed_values(classifier(), trial(**{"tuner/epochs": 3, "tuner/round": 0}))
    assert values == {**trial().hyperparameters, "batch_size": 4}


def test_a_value_outside_a_range_or_choices_names_the_hyperparameter_and_why() -> None:
    error = misfit(classifier(units={"min": 8, "max": 32, "step": 8}), trial())
    assert error.field == "trial 03.units_0" and "outside model.units's range" in error.message
    error = misfit(classifier(activation={"values": ["relu", "elu"]}), trial())
    assert error.field == "trial 03.activation" and "not one of model.activation's values" in error.message


def test_a_constant_that_differs_and_an_unknown_name_do_not_fit() -> None:
    # The earlier job's batch size 4 (a constant there) is not this job's constant 8.
    body_spec = classifier()
    spec = body_spec.model_copy(update={"training": body_spec.training.model_copy(update={"batch_size": 8})})
    error = misfit(spec, trial())
    assert error.field == "trial 03.batch_size" and "constant 8" in error.message
    error = misfit(classifier(), trial(momentum=0.9))
    assert error.field == "trial 03.momentum" and "not a hyperparameter of this job" in error.message


def test_a_trial_with_more_layers_than_the_space_allows_does_not_fit() -> None:
    error = misfit(classifier(hidden_layers={"min": 1, "max": 1}), trial())
    assert error.field.startswith("trial 03.")


def request_problems(warm_start: Any, algorithm: str = "bayesian") -> dict[str, str]:
    body: dict[str, Any] = json.loads((EXAMPLES / "xor-classifier.json").read_text())
    body["tuner"].update(algorithm=algorithm, warm_start=warm_start)
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate(body)
    return {p.field: p.message for p in invalid_request([dict(e) for e in caught.value.errors()]).fields}


def test_the_request_takes_one_to_five_distinct_jobs_and_not_hyperband_or_grid() -> None:
    assert "tuner.warm_start.jobs" in request_problems({"jobs": []})
    assert "tuner.warm_start.jobs" in request_problems({"jobs": [str(i) for i in range(6)]})
    assert "lists a job twice" in request_problems({"jobs": ["a", "a"]})["tuner.warm_start.jobs"]
    for algorithm in ("hyperband", "grid"):
        message = request_problems({"jobs": ["a"]}, algorithm)["tuner.warm_start"]
        assert algorithm in message and "random, bayesian, tpe or cmaes" in message


def test_past_the_limit_the_best_seeds_are_kept_in_their_order() -> None:
    seeds = [
        SeedTrial(job_id="a", trial_id=str(i), values={}, objective_value=float(i % 7))
        for i in range(MAX_SEED_TRIALS + 10)
    ]
    spec = classifier()  # val_accuracy, maximised
    kept = best(spec, seeds)
    assert len(kept) == MAX_SEED_TRIALS and kept == sorted(kept, key=lambda seed: int(seed.trial_id))
    assert min(seed.objective_value for seed in kept) >= max(
        seed.objective_value for seed in seeds if seed not in kept
    )
    assert best(spec, seeds[:3]) == seeds[:3]
