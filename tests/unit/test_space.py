"""A job's search space as keras-tuner HyperParameters (`worker.space.search_space`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import keras_tuner as kt
import pytest

from service.core.params import value_count
from service.core.spec import JobCreate, grid_size
from worker.oracles import new_oracle
from worker.space import layer_counts, search_space

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
hps = kt.engine.hyperparameters

REGRESSION: dict[str, Any] = {
    "task": "regression",
    "data": {"train": {"x": [[0], [1], [2], [3], [4]], "y": [0, 1, 2, 3, 4]}},
}


def spec_of(body: dict[str, Any]) -> JobCreate:
    return JobCreate.model_validate(body)


def example(name: str) -> JobCreate:
    return spec_of(json.loads((EXAMPLES / name).read_text()))


def with_model(**model: Any) -> JobCreate:
    body = copy.deepcopy(REGRESSION)
    body["model"] = model
    return spec_of(body)


def declared(hp: kt.HyperParameters) -> dict[str, Any]:
    return {h.name: h for h in hp.space}


def active_units(hp: kt.HyperParameters, layers: int) -> list[str]:
    """Which units_i are active once the trial picks `layers` hidden layers."""
    hp.values["hidden_layers"] = layers
    return [name for name in declared(hp) if name.startswith("units_") and hp.is_active(name)]


def test_seed_declares_hidden_layers_and_twenty_conditional_units() -> None:
    hp = search_space(example("xor-seed.json"))
    space = declared(hp)
    layers = space["hidden_layers"]
    assert isinstance(layers, hps.Int)
    assert (layers.min_value, layers.max_value) == (2, 20)
    units = sorted((name for name in space if name.startswith("units_")), key=lambda n: int(n.split("_")[1]))
    assert units == [f"units_{i}" for i in range(20)]
    for name in units:
        assert isinstance(space[name], hps.Int)
        assert (space[name].min_value, space[name].max_value, space[name].step) == (32, 512, 32)
        assert space[name].conditions, f"{name} should depend on hidden_layers"


@pytest.mark.parametrize("layers", [2, 3, 7, 19, 20])
def test_seed_units_are_active_only_for_existing_layers(layers: int) -> None:
    hp = search_space(example("xor-seed.json"))
    assert active_units(hp, layers) == [f"units_{i}" for i in range(layers)]


def test_seed_learning_rate_is_a_choice_and_constants_are_not_hyperparameters() -> None:
    space = declared(search_space(example("xor-seed.json")))
    learning_rate = space["learning_rate"]
    assert isinstance(learning_rate, hps.Choice)
    assert list(learning_rate.values) == [0.01, 0.001, 0.0001]
    assert not {"activation", "dropout", "optimizer", "batch_size"} & space.keys()
    assert not any(isinstance(h, hps.Fixed) for h in space.values())


def test_classifier_declares_step_log_and_choice() -> None:
    space = declared(search_space(example("xor-classifier.json")))
    dropout = space["dropout"]
    assert isinstance(dropout, hps.Float)
    assert (dropout.min_value, dropout.max_value) == (0.0, 0.3)
    assert dropout.step == pytest.approx(0.1)
    learning_rate = space["learning_rate"]
    assert isinstance(learning_rate, hps.Float)
    assert learning_rate.sampling == "log"
    assert (learning_rate.min_value, learning_rate.max_value) == (0.0001, 0.05)
    activation = space["activation"]
    assert isinstance(activation, hps.Choice)
    assert list(activation.values) == ["relu", "tanh"]
    optimizer = space["optimizer"]
    assert isinstance(optimizer, hps.Choice)
    assert list(optimizer.values) == ["adam", "rmsprop"]
    assert "batch_size" not in space, "a constant batch size is no hyperparameter"
    assert len(space) == 8  # hidden_layers, units_0-2, activation, dropout, optimizer, learning_rate
    assert sorted(name for name in space if name.startswith("units_")) == ["units_0", "units_1", "units_2"]
    assert (space["units_2"].min_value, space["units_2"].max_value, space["units_2"].step) == (8, 128, 8)


def test_classifier_units_follow_hidden_layers() -> None:
    hp = search_space(example("xor-classifier.json"))
    assert active_units(hp, 1) == ["units_0"]
    assert active_units(hp, 3) == ["units_0", "units_1", "units_2"]


def test_constant_hidden_layers_gives_unconditional_units() -> None:
    hp = search_space(with_model(hidden_layers=3, units={"min": 4, "max": 16, "step": 4}))
    space = declared(hp)
    assert "hidden_layers" not in space
    assert sorted(name for name in space if name.startswith("units_")) == ["units_0", "units_1", "units_2"]
    for name in ("units_0", "units_1", "units_2"):
        assert isinstance(space[name], hps.Int)
        assert space[name].conditions == []
        assert hp.is_active(name)


def test_constant_units_are_no_hyperparameters_under_tuned_hidden_layers() -> None:
    space = declared(search_space(with_model(hidden_layers={"min": 1, "max": 3}, units=16)))
    assert set(space) == {"hidden_layers"}


def test_a_space_that_tunes_nothing_keeps_its_constants_fixed() -> None:
    """keras-tuner's Hyperband hands out no trial for an empty space: the one configuration is kept."""
    space = declared(search_space(with_model(hidden_layers=2, units=16)))
    assert {name: type(h).__name__ for name, h in space.items()} == {
        "hidden_layers": "Fixed",
        "units_0": "Fixed",
        "units_1": "Fixed",
        "activation": "Fixed",
        "dropout": "Fixed",
        "optimizer": "Fixed",
        "learning_rate": "Fixed",
        "batch_size": "Fixed",
    }
    assert space["units_1"].value == 16
    assert space["learning_rate"].value == 0.001


def test_hidden_layers_choice_conditions_units_on_the_listed_counts() -> None:
    hp = search_space(with_model(hidden_layers={"values": [3, 1]}, units={"values": [8, 16]}))
    space = declared(hp)
    assert isinstance(space["hidden_layers"], hps.Choice)
    assert isinstance(space["units_0"], hps.Choice)
    assert active_units(hp, 1) == ["units_0"]
    assert active_units(hp, 3) == ["units_0", "units_1", "units_2"]


def test_int_range_with_log_sampling_is_declared_as_such() -> None:
    space = declared(search_space(with_model(units={"min": 2, "max": 64, "sampling": "log"})))
    assert space["units_0"].sampling == "log"
    assert (space["units_0"].min_value, space["units_0"].max_value) == (2, 64)


@pytest.mark.parametrize(
    ("param", "counts"),
    [
        (4, [4]),
        ({"min": 1, "max": 4}, [1, 2, 3, 4]),
        ({"min": 1, "max": 6, "step": 2}, [1, 3, 5]),
        ({"min": 2, "max": 5, "sampling": "log"}, [2, 3, 4, 5]),
        ({"values": [5, 2]}, [2, 5]),
    ],
)
def test_layer_counts(param: Any, counts: list[int]) -> None:
    assert layer_counts(with_model(hidden_layers=param).model.hidden_layers) == counts


TUNED_UNITS = {"values": [8, 16]}  # constant units would be no hyperparameters: nothing to activate


def _sampled_layer_counts(hp: kt.HyperParameters) -> set[int]:
    layers = declared(hp)["hidden_layers"]
    return {layers.prob_to_value(p / 1000) for p in range(1000)}


@pytest.mark.parametrize("sampling", ["log", "reverse_log"])
def test_layer_counts_match_what_keras_tuner_samples_with_a_log_step(sampling: str) -> None:
    spec = with_model(hidden_layers={"min": 1, "max": 8, "step": 2, "sampling": sampling}, units=TUNED_UNITS)
    hp = search_space(spec)
    sampled = _sampled_layer_counts(hp)
    assert sampled <= set(layer_counts(spec.model.hidden_layers))
    for layers in sampled:
        assert active_units(hp, layers) == [f"units_{i}" for i in range(layers)]


def test_layer_counts_match_what_keras_tuner_samples_with_a_linear_step() -> None:
    spec = with_model(hidden_layers={"min": 1, "max": 8, "step": 3}, units=TUNED_UNITS)
    hp = search_space(spec)
    sampled = _sampled_layer_counts(hp)
    assert sampled == set(layer_counts(spec.model.hidden_layers)) == {1, 4, 7}
    for layers in sampled:
        assert active_units(hp, layers) == [f"units_{i}" for i in range(layers)]


# --- the API's counts (service.core.params.value_count, spec.grid_size) against keras-tuner's own ----------

_RANGES = [
    {"min": 2, "max": 20},
    {"min": 32, "max": 512, "step": 32},
    {"min": 1, "max": 10, "step": 4},
    {"min": 1, "max": 64, "step": 2, "sampling": "log"},
    {"min": 3, "max": 200, "step": 3, "sampling": "reverse_log"},
    {"min": 1, "max": 300, "sampling": "log"},
    {"min": 5, "max": 9, "sampling": "reverse_log"},
]
_FLOAT_RANGES = [
    {"min": 0.0, "max": 0.3},
    {"min": 0.0, "max": 0.45, "step": 0.05},
    {"min": 0.1, "max": 0.7, "step": 0.2},
    {"min": 0.01, "max": 0.02, "sampling": "reverse_log"},
]
_LOG_RATES = [
    {"min": 1e-4, "max": 1e-1, "sampling": "log"},
    {"min": 1e-5, "max": 0.5, "step": 10.0, "sampling": "log"},
    {"min": 1e-3, "max": 0.9, "step": 2.0, "sampling": "reverse_log"},
]


def _kt_grid_count(hp: Any) -> int:
    # GridSearchOracle walks [hp.default] + the listed values other than the default.
    listed = list(hp.values)
    return len(listed) + (hp.default not in listed)


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [("units", "units_0", r) for r in _RANGES]
    + [("dropout", "dropout", r) for r in _FLOAT_RANGES]
    + [("learning_rate", "learning_rate", r) for r in _LOG_RATES]
    + [("units", "units_0", {"values": [3, 1, 2]})],
)
def test_value_count_is_what_keras_tuner_lists(section: str, name: str, value: dict[str, Any]) -> None:
    body = copy.deepcopy(REGRESSION)
    if section == "learning_rate":
        body["optimizer"] = {"learning_rate": value}
    else:
        body["model"] = {"hidden_layers": 1, section: value}
    spec = spec_of(body)
    param = spec.optimizer.learning_rate if section == "learning_rate" else getattr(spec.model, section)
    assert value_count(param) == _kt_grid_count(declared(search_space(spec))[name])


@pytest.mark.parametrize(
    "model",
    [
        {
            "hidden_layers": {"min": 1, "max": 3},
            "units": {"values": [4, 8]},
            "dropout": {"min": 0, "max": 0.2, "step": 0.1},
        },
        {
            "hidden_layers": {"values": [1, 3]},
            "units": {"min": 2, "max": 4},
            "activation": {"values": ["relu", "tanh"]},
        },
        {"hidden_layers": 2, "units": {"min": 2, "max": 16, "step": 2, "sampling": "log"}},
        {"hidden_layers": {"min": 1, "max": 4, "step": 2, "sampling": "log"}, "units": {"values": [3, 5]}},
    ],
)
def test_grid_size_is_how_many_trials_keras_tuners_grid_walks(model: dict[str, Any]) -> None:
    body = copy.deepcopy(REGRESSION)
    body.update(
        model=model, optimizer={"learning_rate": {"values": [0.1, 0.01]}}, tuner={"algorithm": "grid"}
    )
    spec = spec_of(body).resolved()
    oracle = new_oracle(spec)
    oracle.max_trials = None  # walk the whole grid
    walked = set()
    while (trial := oracle.create_trial("t")).status != kt.engine.trial.TrialStatus.STOPPED:
        walked.add(tuple(sorted(trial.hyperparameters.values.items())))
        oracle.end_trial(trial)
    assert grid_size(spec) == len(walked)
