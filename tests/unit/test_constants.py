"""A job's constants beside a trial's hyperparameters (`worker.constants`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.core.spec import JobCreate
from worker.constants import configuration, constants, split

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def spec_of(**model: Any) -> JobCreate:
    body: dict[str, Any] = {
        "task": "regression",
        "data": {"train": {"x": [[0], [1], [2], [3], [4]], "y": [0, 1, 2, 3, 4]}},
        "model": model,
        "optimizer": {"learning_rate": {"values": [0.01, 0.001]}},
    }
    return JobCreate.model_validate(body)


def test_the_classifier_examples_constant_is_its_batch_size() -> None:
    spec = JobCreate.model_validate(json.loads((EXAMPLES / "xor-classifier.json").read_text()))
    values = {"hidden_layers": 1, "units_0": 8, "activation": "relu", "dropout": 0.0, "optimizer": "adam"}
    assert constants(spec, {**values, "learning_rate": 0.01}) == {"batch_size": 4}


def test_constant_units_follow_the_trials_layers() -> None:
    spec = spec_of(hidden_layers={"min": 1, "max": 3}, units=16)
    assert constants(spec, {"hidden_layers": 2, "learning_rate": 0.01}) == {
        "units_0": 16,
        "units_1": 16,
        "activation": "relu",
        "dropout": 0.0,
        "optimizer": "adam",
        "batch_size": 32,
    }


def test_constant_layers_give_each_layer_its_constant_units() -> None:
    fixed = constants(spec_of(hidden_layers=2, units=8), {"learning_rate": 0.01})
    assert (fixed["hidden_layers"], fixed["units_0"], fixed["units_1"]) == (2, 8, 8)
    assert "units_2" not in fixed


def test_split_takes_constants_out_of_values_an_older_search_fixed() -> None:
    spec = spec_of(hidden_layers=1, units={"values": [4, 8]})
    older = {"hidden_layers": 1, "units_0": 4, "activation": "relu", "dropout": 0.0, "optimizer": "adam",
             "learning_rate": 0.01, "batch_size": 32}  # fmt: skip
    tuned, fixed = split(spec, older)
    assert tuned == {"units_0": 4, "learning_rate": 0.01}
    assert fixed == {
        "hidden_layers": 1,
        "activation": "relu",
        "dropout": 0.0,
        "optimizer": "adam",
        "batch_size": 32,
    }
    assert split(spec, tuned) == (tuned, fixed), "a new search's values give the same split"


def test_configuration_is_the_whole_of_what_a_trial_trains_with() -> None:
    spec = spec_of(hidden_layers={"values": [1, 2]}, units={"values": [4, 8]})
    values = {"hidden_layers": 2, "units_0": 4, "units_1": 8, "learning_rate": 0.01, "tuner/epochs": 3}
    assert configuration(spec, values) == {
        **values,
        "activation": "relu",
        "dropout": 0.0,
        "optimizer": "adam",
        "batch_size": 32,
    }
