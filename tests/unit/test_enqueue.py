"""`tuner.enqueue` checked against the job's search space (`service.core.enqueue`), through the request."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.api.errors import invalid_request
from service.core.spec import JobCreate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def classifier(**tuner: Any) -> dict[str, Any]:
    """The README's classifier: 1-3 layers of 8-128 units step 8, relu/tanh, dropout 0-0.3 step 0.1,
    adam/rmsprop, a log learning rate 1e-4..0.05, batch size 4 (a constant)."""
    body: dict[str, Any] = json.loads((EXAMPLES / "xor-classifier.json").read_text())
    body["tuner"].update(tuner)
    return body


def problems(body: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate(body)
    return {p.field: p.message for p in invalid_request(caught.value.errors()).fields}


def test_entries_are_kept_in_order_with_values_as_the_space_types_them() -> None:
    entries = [
        {"hidden_layers": 2, "units_0": 16, "units_1": 32.0, "activation": "tanh", "learning_rate": 0.01},
        {"dropout": 0, "optimizer": "rmsprop", "batch_size": 4},
        {},
    ]
    spec = JobCreate.model_validate(classifier(enqueue=copy.deepcopy(entries)))
    assert spec.tuner.enqueue == [
        {"hidden_layers": 2, "units_0": 16, "units_1": 32, "activation": "tanh", "learning_rate": 0.01},
        {"dropout": 0.0, "optimizer": "rmsprop", "batch_size": 4},
        {},
    ]
    assert isinstance(spec.tuner.enqueue[0]["units_1"], int)
    assert isinstance(spec.tuner.enqueue[1]["dropout"], float)
    # What is stored and loaded again by the worker validates the same.
    stored = spec.without_data().model_dump(mode="json")
    assert (
        JobCreate.model_validate({**stored, "data": classifier()["data"]}).tuner.enqueue == spec.tuner.enqueue
    )


@pytest.mark.parametrize(
    ("entry", "field", "fragment"),
    [
        (
            {"hidden_layers": 4},
            "hidden_layers",
            "outside model.hidden_layers's range: give a number from 1 to 3",
        ),
        ({"hidden_layers": 1.5}, "hidden_layers", "must be a whole number"),
        ({"hidden_layers": 2, "units_0": 17}, "units_0", "step 8 and linear sampling: give one of 8, 16, 24"),
        ({"hidden_layers": 2, "units_0": 136}, "units_0", "give a number from 8 to 128"),
        ({"units_3": 8}, "units_3", "at most 3 hidden layers, so units_3 does not exist"),
        ({"units_1": 8}, "units_1", "give hidden_layers in the entry too"),
        ({"hidden_layers": 1, "units_1": 8}, "units_1", "hidden_layers is 1, so units_1 does not exist"),
        ({"units": 8}, "units", "units are set per layer: give units_0, units_1"),
        ({"layers": 2}, "layers", "is not a hyperparameter of this job"),
        ({"tuner/epochs": 2}, "tuner/epochs", "is not a hyperparameter of this job"),
        ({"activation": "selu"}, "activation", "not one of model.activation's values: choose from ['relu'"),
        ({"activation": 1}, "activation", "not one of model.activation's values"),
        ({"dropout": 0.25}, "dropout", "give one of 0.0, 0.1, 0.2"),
        ({"dropout": "0.1"}, "dropout", "must be a number"),
        ({"dropout": None}, "dropout", "must be a number or a name"),
        ({"dropout": True}, "dropout", "must be a number or a name"),
        ({"dropout": [0.1]}, "dropout", "must be a number or a name"),
        ({"learning_rate": 0.5}, "learning_rate", "give a number from 0.0001 to 0.05"),
        ({"learning_rate": float("nan")}, "learning_rate", "must be a finite number"),
        ({"learning_rate": 10**400}, "learning_rate", "give a number from 0.0001 to 0.05"),
        ({"hidden_layers": -(10**400)}, "hidden_layers", "give a number from 1 to 3"),
        ({"hidden_layers": 1e300}, "hidden_layers", "give a number from 1 to 3"),
        ({"dropout": 10**400}, "dropout", "give a number from 0.0 to 0.3"),
        ({"activation": 10**400}, "activation", "not one of model.activation's values"),
        ({"optimizer": 10**400}, "optimizer", "not one of optimizer.name's values"),
        ({"optimizer": "sgd"}, "optimizer", "choose from ['adam', 'rmsprop']"),
        ({"batch_size": 8}, "batch_size", "training.batch_size is the constant 4 in this job: leave it out"),
        ({"batch_size": "4"}, "batch_size", "is the constant 4"),
    ],
)
def test_a_value_the_search_could_not_pick_is_named_with_what_it_allows(
    entry: dict[str, Any], field: str, fragment: str
) -> None:
    found = problems(classifier(enqueue=[{}, entry]))
    assert list(found) == [f"tuner.enqueue[1].{field}"]
    assert fragment in found[f"tuner.enqueue[1].{field}"]


def test_more_entries_than_trials_is_refused() -> None:
    found = problems(classifier(max_trials=2, enqueue=[{}, {}, {}]))
    assert found == {
        "tuner.enqueue": "3 entries, more than tuner.max_trials (2): each runs as one of the job's trials; "
        "give fewer entries or raise max_trials"
    }


@pytest.mark.parametrize("entries", [{"hidden_layers": 2}, [1], ["relu"], [[]]])
def test_entries_must_be_a_list_of_objects(entries: Any) -> None:
    found = problems(classifier(enqueue=entries))
    assert all(field.startswith("tuner.enqueue") for field in found) and found, found


@pytest.mark.parametrize(
    ("param", "good", "bad", "hint"),
    [
        ({"min": 1, "max": 64, "step": 2, "sampling": "log"}, [1, 2, 8, 64], [3, 63], "1, 2, 4"),
        ({"min": 1, "max": 10, "step": 3}, [1, 4, 10], [2, 11], "1, 4, 7"),
        ({"min": 4, "max": 100}, [4, 5, 99, 100], [3, 101], None),
        ({"values": [16, 64]}, [16, 64.0], [32], None),
    ],
)
def test_integer_ranges_and_choices_take_what_keras_tuner_would_sample(
    param: dict[str, Any], good: list[Any], bad: list[Any], hint: str | None
) -> None:
    body = classifier()
    body["model"]["units"] = param
    body["model"]["hidden_layers"] = 1
    for value in good:
        spec = JobCreate.model_validate({**body, "tuner": {**body["tuner"], "enqueue": [{"units_0": value}]}})
        assert spec.tuner.enqueue == [{"units_0": int(value)}]
    for value in bad:
        found = problems({**body, "tuner": {**body["tuner"], "enqueue": [{"units_0": value}]}})
        assert list(found) == ["tuner.enqueue[0].units_0"], (value, found)
        if hint is not None and param["min"] <= value <= param["max"]:
            assert hint in found["tuner.enqueue[0].units_0"]


def test_float_ranges_with_a_step_take_the_values_on_it() -> None:
    body = classifier()
    body["optimizer"]["learning_rate"] = {"min": 0.001, "max": 1.0, "step": 10, "sampling": "log"}
    for value in (0.001, 0.01, 0.1, 1.0):
        JobCreate.model_validate({**body, "tuner": {**body["tuner"], "enqueue": [{"learning_rate": value}]}})
    found = problems({**body, "tuner": {**body["tuner"], "enqueue": [{"learning_rate": 0.05}]}})
    assert "give one of 0.001, 0.01, 0.1" in found["tuner.enqueue[0].learning_rate"]


def test_constants_may_be_given_as_themselves() -> None:
    body = classifier(enqueue=[{"hidden_layers": 2, "activation": "relu"}])
    body["model"].update(hidden_layers=2, activation="relu")
    spec = JobCreate.model_validate(body)
    assert spec.tuner.enqueue == [{"hidden_layers": 2, "activation": "relu"}]
    body["tuner"]["enqueue"] = [{"hidden_layers": 2, "units_1": 16}]
    assert JobCreate.model_validate(body).tuner.enqueue == [{"hidden_layers": 2, "units_1": 16}]
    body["tuner"]["enqueue"] = [{"units_2": 16}]
    assert "give units_0 .. units_1 only" in problems(body)["tuner.enqueue[0].units_2"]
