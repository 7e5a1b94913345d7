"""A job's search space as keras-tuner HyperParameters.

Constants are registered as Fixed so every trial records its whole configuration. Per-layer units
(`units_0`, `units_1`, ...) are active only when their layer exists (keras-tuner conditional scopes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras_tuner as kt

from service.core.params import FloatChoice, FloatRange, IntChoice, IntRange, NameChoice, is_tuned
from service.core.spec import JobSpec


def _declare(hp: kt.HyperParameters, name: str, param: Any) -> None:
    if isinstance(param, IntRange):
        hp.Int(name, param.min, param.max, step=param.step, sampling=param.sampling)
    elif isinstance(param, FloatRange):
        hp.Float(name, param.min, param.max, step=param.step, sampling=param.sampling)
    elif isinstance(param, IntChoice | FloatChoice | NameChoice):
        hp.Choice(name, list(param.values))
    else:
        hp.Fixed(name, param)


def layer_counts(param: int | IntRange | IntChoice) -> list[int]:
    """Every number of hidden layers the search can pick (a superset is harmless, a gap is not)."""
    if isinstance(param, IntRange):
        if param.step is None:
            return list(range(param.min, param.max + 1))
        # With a step, keras-tuner's own grid: log sampling with step 2 gives 1, 2, 4, 8, not 1, 3, 5, 7.
        grid = kt.engine.hyperparameters.Int(
            "hidden_layers", param.min, param.max, step=param.step, sampling=param.sampling
        )
        return sorted({int(value) for value in grid.values})
    if isinstance(param, IntChoice):
        return sorted(param.values)
    return [param]


@contextlib.contextmanager
def _when_layer_exists(hp: kt.HyperParameters, spec: JobSpec, index: int) -> Iterator[None]:
    if not is_tuned(spec.model.hidden_layers):
        yield
        return
    counts = [n for n in layer_counts(spec.model.hidden_layers) if n > index]
    with hp.conditional_scope("hidden_layers", counts):
        yield


def search_space(spec: JobSpec) -> kt.HyperParameters:
    """Declare every hyperparameter of the job, constants included."""
    hp = kt.HyperParameters()
    _declare(hp, "hidden_layers", spec.model.hidden_layers)
    for index in range(max(layer_counts(spec.model.hidden_layers))):
        with _when_layer_exists(hp, spec, index):
            _declare(hp, f"units_{index}", spec.model.units)
    _declare(hp, "activation", spec.model.activation)
    _declare(hp, "dropout", spec.model.dropout)
    _declare(hp, "optimizer", spec.optimizer.name)
    _declare(hp, "learning_rate", spec.optimizer.learning_rate)
    _declare(hp, "batch_size", spec.training.batch_size)
    return hp
