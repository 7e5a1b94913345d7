"""Elastic widths: one traced epoch loop trains models of any hidden widths, with every optimizer ktune
offers, and hands back plain models that save and export like any other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from service.core.catalog import ACTIVATIONS
from service.core.spec import JobCreate, JobSpec
from worker import elastic_models
from worker.fast_training import fast_fit_execution, trainer_for
from worker.model_builder import _OPTIMIZERS, build_model
from worker.training import FitOptions, TrainData

X = np.random.default_rng(0).normal(size=(24, 3)).astype("float32")
DATA = TrainData(X[:18], X[:18].sum(axis=1), X[18:], X[18:].sum(axis=1))
OPTIONS = FitOptions(epochs=4, batch_size=5, monitor="val_loss", mode="min", shuffle=True)


def spec() -> JobSpec:
    return JobCreate.model_validate(
        {
            "name": "elastic",
            "task": "regression",
            "data": {"train": {"x": [[0.0, 0.0, 0.0]] * 5, "y": [0.0, 1.0, 2.0, 3.0, 4.0]}},
            "model": {"architecture": "mlp", "hidden_layers": 2, "units": {"min": 2, "max": 64}},
            "training": {"epochs": 4},
            "tuner": {"max_trials": 2},
        }
    )


def values(
    units: tuple[int, int], optimizer: str = "adam", learning_rate: float = 0.01, dropout: float = 0.25
) -> dict[str, Any]:
    return {
        "hidden_layers": 2,
        "units_0": units[0],
        "units_1": units[1],
        "activation": "tanh",
        "dropout": dropout,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
        "batch_size": 5,
    }


def model(trial: dict[str, Any], seed: int = 3) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_model(spec(), trial, DATA, units=1)


def never(epoch: int, logs: dict[str, float]) -> None:
    return None


def test_relax_frees_the_hidden_widths_and_keeps_the_output_width() -> None:
    trainer = trainer_for(None, model(values((4, 6))), lambda: model(values((4, 6))), DATA)
    shapes = [tuple(weight.shape) for weight in trainer.weights if weight.name in ("kernel", "bias")]
    assert shapes == [(None, None), (None,), (None, None), (None,), (None, 1), (1,)]
    slots = [tuple(v.shape) for v in trainer.optimizer.variables if len(v.shape) > 0]
    assert slots and all(all(size is None for size in shape) for shape in slots)
    assert elastic_models.is_elastic(trainer)
    assert elastic_models.parameters(trainer) == 3 * 4 + 4 + 4 * 6 + 6 + 6 + 1


@pytest.mark.parametrize("optimizer", sorted(_OPTIMIZERS))
def test_every_optimizer_trains_other_widths_on_the_kept_trace_as_a_fresh_model(optimizer: str) -> None:
    first, later = values((4, 6), optimizer, 0.02, 0.1), values((9, 2), optimizer, 0.05, 0.3)
    kept = trainer_for(None, model(first), lambda: model(first), DATA)
    fast_fit_execution(kept, DATA, OPTIONS, never)

    fresh = model(later, seed=8)
    trainer = trainer_for(kept, fresh, lambda: pytest.fail("the kept model is used"), DATA)
    actual = fast_fit_execution(trainer, DATA, OPTIONS, never)
    trained = elastic_models.unload(trainer, fresh)
    twin = model(later, seed=8)
    expected = fast_fit_execution(twin, DATA, OPTIONS, never)

    assert kept._ktune_fast_loop.run.experimental_get_tracing_count() == 1
    # Equal up to rounding: the kept trace's kernels, chosen for shapes it does not know, may sum in another
    # order than the twin's (rmsprop's squared-gradient slot once differed by 2.2e-5 relative, under load);
    # a slot, width, rate or learning rate not carried over differs by orders of magnitude more.
    for name, history in expected.history.items():
        np.testing.assert_allclose(actual.history[name], history, rtol=1e-4, err_msg=name)
    for mine, theirs in zip(trained.optimizer.variables, twin.optimizer.variables, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-7, err_msg=mine.path)


def test_a_handed_back_model_saves_and_loads_as_a_plain_one(tmp_path: Path) -> None:
    first, later = values((4, 6)), values((16, 3))
    kept = trainer_for(None, model(first), lambda: model(first), DATA)
    fast_fit_execution(kept, DATA, OPTIONS, never)
    fresh = model(later)
    result = fast_fit_execution(trainer_for(kept, fresh, model, DATA), DATA, OPTIONS, never)
    trained = elastic_models.unload(kept, fresh)
    trained.set_weights(result.best_weights or [])

    path = tmp_path / "model.keras"
    trained.save(path)
    loaded = keras.models.load_model(path)
    assert [w.shape for w in loaded.get_weights()] == [(3, 16), (16,), (16, 3), (3,), (3, 1), (1,)]
    np.testing.assert_allclose(loaded.predict(DATA.x_val, verbose=0), trained.predict(DATA.x_val, verbose=0))


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.45, 0.7, 0.9])
def test_a_free_dropout_rate_drops_and_scales_exactly_as_keras_does(rate: float) -> None:
    kept = trainer_for(None, model(values((4, 6), dropout=0.2)), lambda: model(values((4, 6))), DATA)
    fresh = model(values((5, 5), dropout=rate))
    elastic_models.load(kept, fresh)
    inputs = np.random.default_rng(1).normal(size=(64, 5)).astype("float32")
    free = next(layer for layer in kept.layers if isinstance(layer, keras.layers.Dropout))
    plain = next(layer for layer in fresh.layers if isinstance(layer, keras.layers.Dropout))
    free.seed_generator.state.assign(plain.seed_generator.state)

    actual = tf.function(lambda x: free(x, training=True))(inputs)  # as in the traced loop
    expected = tf.function(lambda x: plain(x, training=True))(inputs)

    np.testing.assert_array_equal(actual.numpy(), expected.numpy())
    assert 0 < np.mean(actual.numpy() == 0) < 1
    np.testing.assert_array_equal(free(inputs, training=False), inputs)


def test_models_of_other_layers_are_refused() -> None:
    kept = trainer_for(None, model(values((4, 6))), lambda: model(values((4, 6))), DATA)
    three = {**values((4, 6)), "hidden_layers": 3, "units_2": 5}
    with pytest.raises(ValueError, match="not the same layers"):
        elastic_models.load(kept, model(three))


def activation_spec(choices: list[str]) -> JobSpec:
    body = spec().model_dump(mode="json", exclude_none=True)
    body["model"] = {**body["model"], "activation": {"values": choices}, "dropout": {"min": 0.0, "max": 0.5}}
    return JobCreate.model_validate(body)


def kept_for(job: JobSpec, trial: dict[str, Any]) -> keras.Model:
    """The job's elastic model, traced and trained for `trial`."""
    kept = trainer_for(None, model(trial), lambda: build_model(job, trial, DATA, units=1, elastic=True), DATA)
    fast_fit_execution(kept, DATA, OPTIONS, never)
    return kept


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_a_free_activation_computes_exactly_the_trials_own(activation: str) -> None:
    job = activation_spec(list(ACTIVATIONS))
    kept = kept_for(job, {**values((4, 6)), "activation": "linear"})  # traced with another activation
    trial = {**values((5, 7)), "activation": activation, "dropout": 0.0}
    keras.utils.set_random_seed(4)
    fresh = build_model(job, trial, DATA, units=1)
    elastic_models.load(kept, fresh)

    # As in the traced loop, with training on: a trial without dropout has no Dropout layer to match.
    actual = tf.function(lambda x: kept(x, training=True))(DATA.x_val)
    expected = tf.function(lambda x: fresh(x, training=True))(DATA.x_val)

    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)


def test_a_free_dropout_at_rate_zero_passes_its_inputs_and_draws_no_seed() -> None:
    job = activation_spec(["relu", "tanh"])
    kept = kept_for(job, values((4, 6)))
    elastic_models.load(kept, model(values((5, 5), dropout=0.0)))
    free = next(layer for layer in kept.layers if isinstance(layer, keras.layers.Dropout))
    before = free.seed_generator.state.numpy()
    inputs = np.random.default_rng(1).normal(size=(64, 5)).astype("float32")

    actual = tf.function(lambda x: free(x, training=True))(inputs)

    np.testing.assert_array_equal(actual.numpy(), inputs)
    np.testing.assert_array_equal(free.seed_generator.state.numpy(), before)


def test_a_trial_whose_activation_is_not_a_choice_is_refused() -> None:
    job = activation_spec(["relu", "tanh"])
    kept = kept_for(job, values((4, 6)))
    with pytest.raises(ValueError, match="not the same layers"):
        elastic_models.load(kept, model({**values((4, 6)), "activation": "selu"}))
