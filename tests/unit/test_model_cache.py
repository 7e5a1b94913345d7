"""Traced models kept between trials with the same layers: which trials share one, the limits, and that a
trial on a kept model (traced for other widths) trains exactly as on a fresh one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from service.core.spec import JobCreate, JobSpec
from worker.elastic_models import unload
from worker.fast_training import fast_fit_execution, trainer_for
from worker.model_builder import build_model
from worker.model_cache import TRACED, ModelCache, layers_key, traced_model
from worker.training import FitOptions, TrainData

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def classifier_spec() -> JobSpec:
    body: dict[str, Any] = json.loads((EXAMPLES / "xor-classifier.json").read_text())
    return JobCreate.model_validate(body)


TRIAL = {
    "hidden_layers": 2,
    "units_0": 8,
    "units_1": 16,
    "activation": "tanh",
    "dropout": 0.2,
    "optimizer": "adam",
    "learning_rate": 0.01,
    "batch_size": 2,
}

# --- layers_key -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"dropout": 0.45},
        {"dropout": 0.0},  # a trial without dropout skips the kept model's Dropout layers
        {"activation": "relu"},
    ],
)
def test_trials_differing_only_in_values_the_loop_reads_at_run_time_share_a_model(
    change: dict[str, Any],
) -> None:
    spec = classifier_spec()
    key = layers_key("job", spec, TRIAL)
    other = {
        **TRIAL,
        "units_0": 256,
        "units_1": 32,
        "learning_rate": 0.5,
        "batch_size": 4,
        "tuner/epochs": 9,
        "tuner/trial_id": "03",
        **change,
    }
    assert layers_key("job", spec, other) == key


@pytest.mark.parametrize(
    "change",
    [
        {"optimizer": "rmsprop"},
        {"hidden_layers": 3, "units_2": 8},
    ],
)
def test_trials_of_another_architecture_do_not(change: dict[str, Any]) -> None:
    spec = classifier_spec()
    assert layers_key("job", spec, {**TRIAL, **change}) != layers_key("job", spec, TRIAL)


def test_another_jobs_trials_do_not() -> None:
    spec = classifier_spec()
    assert layers_key("a", spec, TRIAL) != layers_key("b", spec, TRIAL)


# --- ModelCache ---------------------------------------------------------------------------------------


def dense(units: int) -> keras.Model:
    """A model of 4 x units + units parameters."""
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])


def test_a_taken_model_is_no_longer_kept() -> None:
    cache = ModelCache()
    model = dense(2)
    cache.keep("a", model)
    assert cache.take("a") is model
    assert cache.take("a") is None and len(cache) == 0


def test_the_least_recently_kept_model_goes_first() -> None:
    cache = ModelCache(max_models=2)
    first, second, third = dense(1), dense(1), dense(1)
    cache.keep("first", first)
    cache.keep("second", second)
    cache.keep("first", cache.take("first") or first)  # used again: now the most recent
    cache.keep("third", third)
    assert cache.take("second") is None
    assert cache.take("first") is first and cache.take("third") is third


def test_models_are_kept_up_to_a_number_of_parameters() -> None:
    cache = ModelCache(max_parameters=100)
    cache.keep("small", dense(10))  # 50 parameters
    cache.keep("large", dense(200))  # 1,000: never kept
    assert len(cache) == 1 and cache.parameters == 50
    cache.keep("other", dense(12))  # 60: the older one goes
    assert cache.take("small") is None and cache.parameters == 60


def test_a_model_leaving_for_good_is_noted_for_the_garbage_collector() -> None:
    cache = ModelCache(max_models=1, max_parameters=100)
    cache.keep("a", dense(2))
    cache.keep("a", cache.take("a") or dense(2))
    assert cache.drops == 0, "taken and kept again: nothing left"
    cache.keep("b", dense(2))
    assert cache.drops == 1, "the older one went"
    cache.keep("large", dense(200))
    assert cache.drops == 2, "never kept"


# --- traced_model ---------------------------------------------------------------------------------------


def test_the_model_a_block_leaves_is_kept_for_the_next_and_taken_while_in_use() -> None:
    spec, model = classifier_spec(), dense(2)
    with traced_model("kept-job", spec, TRIAL, "fast") as kept:
        assert kept.model is None
        kept.model = model
    with traced_model("kept-job", spec, {**TRIAL, "learning_rate": 0.3}, "fast") as kept:
        assert kept.model is model
        with traced_model("kept-job", spec, TRIAL, "fast") as other:
            assert other.model is None, "in use: no one else gets it"
    assert TRACED.take(layers_key("kept-job", spec, TRIAL)) is model


def test_a_block_that_raises_keeps_nothing_and_the_fit_loop_keeps_nothing() -> None:
    spec, drops = classifier_spec(), TRACED.drops
    with pytest.raises(RuntimeError), traced_model("raising-job", spec, TRIAL, "fast") as kept:
        kept.model = dense(2)
        raise RuntimeError("training failed")
    with traced_model("fit-job", spec, TRIAL, "fit") as kept:
        kept.model = dense(2)
    assert TRACED.take(layers_key("raising-job", spec, TRIAL)) is None
    assert TRACED.take(layers_key("fit-job", spec, TRIAL)) is None
    assert TRACED.drops == drops + 1, "the raising block's model is gone"


# --- a kept model trains as a fresh one ---------------------------------------------------------------


def xor() -> TrainData:
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 3, dtype="float32")
    y = np.array([0, 1, 1, 0] * 3)
    return TrainData(x, y, x[:4], y[:4])


@pytest.mark.parametrize(
    ("first", "later"),
    [
        ({}, {"dropout": 0.35}),
        ({}, {"activation": "relu", "dropout": 0.0}),  # no Dropout layer in the trial's own model
        ({"activation": "relu", "dropout": 0.0}, {"dropout": 0.1}),
    ],
    ids=["another-rate", "another-activation-no-dropout", "dropout-after-none"],
)
def test_a_trial_on_a_kept_model_trains_exactly_as_on_a_fresh_one(
    first: dict[str, Any], later: dict[str, Any]
) -> None:
    spec, data = classifier_spec(), xor()
    options = FitOptions(epochs=6, batch_size=5, monitor="val_accuracy", mode="max", shuffle=True)

    def model(values: dict[str, Any]) -> keras.Model:
        keras.utils.set_random_seed(21)  # as each execution's seed is set before its model is built
        return build_model(spec, values, data, units=1)

    def never(epoch: int, logs: dict[str, float]) -> None:
        return None

    earlier = {**TRIAL, **first}
    elastic = build_model(spec, earlier, data, units=1, elastic=True)
    kept = trainer_for(None, model(earlier), lambda: elastic, data)
    fast_fit_execution(kept, data, options, never)  # an earlier trial: other widths, another learning rate
    later = {**TRIAL, "units_0": 32, "units_1": 3, "learning_rate": 0.05, **later}
    fresh = model(later)
    trainer = trainer_for(kept, fresh, lambda: pytest.fail("the kept model is used"), data)
    actual = fast_fit_execution(trainer, data, options, never)
    trained = unload(trainer, fresh)
    twin = model(later)
    expected = fast_fit_execution(twin, data, options, never)  # a plain model, traced for itself

    assert trainer is kept and kept._ktune_fast_loop.run.experimental_get_tracing_count() == 1
    assert float(kept.optimizer.learning_rate) == pytest.approx(0.05)
    assert list(actual.history) == list(expected.history)
    for name, values in expected.history.items():  # up to rounding, as in test_elastic_models
        np.testing.assert_allclose(actual.history[name], values, rtol=1e-4, err_msg=name)
    assert actual.best_epoch == expected.best_epoch
    assert [w.shape for w in trained.get_weights()[:2]] == [(2, 32), (32,)]
    for mine, theirs in zip(trained.variables, twin.variables, strict=True):  # seed states included
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6, err_msg=mine.path)
