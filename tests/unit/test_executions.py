"""A trial's executions: their seeds, and a hyperband trial going on from the one it continues."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from service.core.artifacts import ArtifactStore
from service.core.spec import JobCreate
from worker.executions import continue_from, execution_seed, recheck_seeds
from worker.fast_training import fast_fit_execution
from worker.training import EpochCallback, ExecutionResult, FitOptions, TrainData, fit_execution

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# --- execution_seed -----------------------------------------------------------------------------------


def spec_with_seed(seed: int | None) -> JobCreate:
    body: dict[str, Any] = json.loads((EXAMPLES / "xor-seed.json").read_text())
    body["tuner"]["seed"] = seed
    return JobCreate.model_validate(body)


def test_execution_seed_is_reproducible_with_a_job_seed() -> None:
    spec = spec_with_seed(1)
    seeds = {
        (trial, execution): execution_seed(spec, trial, execution)
        for trial in ("00", "01", "17")
        for execution in range(3)
    }
    assert seeds == {key: execution_seed(spec_with_seed(1), *key) for key in seeds}
    assert len(set(seeds.values())) == len(seeds), "each trial and execution should get its own seed"
    assert all(0 <= seed < 2**31 for seed in seeds.values())


def test_execution_seed_depends_on_the_job_seed() -> None:
    assert execution_seed(spec_with_seed(1), "03", 0) != execution_seed(spec_with_seed(2), "03", 0)


def test_execution_seed_stays_in_range_for_the_largest_job_seed() -> None:
    seed = execution_seed(spec_with_seed(2**31 - 1), "999", 9)
    assert 0 <= seed < 2**31


def test_execution_seed_without_a_job_seed_is_random() -> None:
    spec = spec_with_seed(None)
    seeds = [execution_seed(spec, "00", 0) for _ in range(8)]
    assert all(0 <= seed < 2**31 for seed in seeds)
    assert len(set(seeds)) > 1


# --- recheck_seeds ------------------------------------------------------------------------------------


def test_recheck_seeds_are_reproducible_and_none_of_the_searchs() -> None:
    spec = spec_with_seed(1)  # two executions per trial
    trials = [f"{index:02d}" for index in range(12)]
    searched = {execution_seed(spec, t, e) for t in trials for e in range(spec.tuner.executions_per_trial)}
    rechecked = {t: recheck_seeds(spec, t, 10) for t in trials}
    assert rechecked == {t: recheck_seeds(spec_with_seed(1), t, 10) for t in trials}
    every = [seed for seeds in rechecked.values() for seed in seeds]
    assert len(set(every)) == len(every), "each retraining of each trial should get its own seed"
    assert searched.isdisjoint(every)
    assert all(0 <= seed < 2**31 for seed in every)


def test_recheck_seeds_depend_on_the_job_seed() -> None:
    assert recheck_seeds(spec_with_seed(1), "03", 3) != recheck_seeds(spec_with_seed(2), "03", 3)


def test_recheck_seeds_without_a_job_seed_are_random() -> None:
    seeds = recheck_seeds(spec_with_seed(None), "00", 5)
    assert len(set(seeds)) == 5 and all(0 <= seed < 2**31 for seed in seeds)


# --- continue_from ------------------------------------------------------------------------------------


def _regression() -> TrainData:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(24, 3))
    y = x @ np.array([0.5, -1.0, 2.0]) + 0.1
    return TrainData(x[:16], y[:16], x[16:], y[16:])


def _regressor() -> keras.Model:
    keras.utils.set_random_seed(7)  # the same initial weights every time
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mean_squared_error")
    return model


def _never(epoch: int, logs: dict[str, float]) -> None:
    return None


def _train(loop: str, model: keras.Model, epochs: int, initial_epoch: int = 0) -> ExecutionResult:
    # One batch of every row, unshuffled: training 3 epochs then 3 more is 6 epochs exactly when, and only
    # when, the optimizer goes on from its moments and step count.
    options = FitOptions(
        epochs=epochs,
        batch_size=16,
        monitor="val_loss",
        mode="min",
        shuffle=False,
        initial_epoch=initial_epoch,
    )
    train: Callable[[keras.Model, TrainData, FitOptions, EpochCallback], ExecutionResult]
    train = fast_fit_execution if loop == "fast" else fit_execution
    return train(model, _regression(), options, _never)


@pytest.mark.parametrize("loop", ["fit", "fast"])
def test_a_continued_trial_trains_on_as_if_never_stopped(loop: str, tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    straight = _regressor()
    expected = _train(loop, straight, epochs=6)

    first = _regressor()
    _train(loop, first, epochs=3)
    first.save_weights(artifacts.checkpoint_path("job", "00"))  # as a hyperband trial's outcome saves them
    continued = _regressor()
    continue_from(continued, artifacts, "job", "00")
    assert int(continued.optimizer.iterations) == 3
    actual = _train(loop, continued, epochs=6, initial_epoch=3)

    np.testing.assert_allclose(actual.history["loss"], expected.history["loss"][3:], rtol=1e-4)
    for mine, theirs in zip(continued.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)
