"""A job's search space as keras-tuner HyperParameters.

Only tuned values are hyperparameters: constants (`worker.constants`) stay out of the space, so they do
not count toward its dimensions (a Bayesian search samples at random until it has results for a multiple
of them). Per-layer units (`units_0`, `units_1`, ...) are active only when their layer exists
(keras-tuner conditional scopes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras_tuner as kt

from service.core.params import FloatChoice, FloatRange, IntChoice, IntRange, NameChoice, is_tuned
from service.core.spec import JobSpec, named_params


def _declare(hp: kt.HyperParameters, name: str, param: Any, constants: bool) -> None:
    if not is_tuned(param):
        if constants:
            hp.Fixed(name, param)
    elif isinstance(param, IntRange):
        hp.Int(name, param.min, param.max, step=param.step, sampling=param.sampling)
    elif isinstance(param, FloatRange):
        hp.Float(name, param.min, param.max, step=param.step, sampling=param.sampling)
    elif isinstance(param, IntChoice | FloatChoice | NameChoice):
        hp.Choice(name, list(param.values))


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


def layer_free_params(spec: JobSpec) -> dict[str, Any]:
    """The job's values that are not the layers' (activation, dropout, optimizer, learning_rate,
    batch_size) by hyperparameter name, each a constant or what the search tunes."""
    return {
        name: value
        for name, (_, value) in named_params(spec).items()
        if name not in ("hidden_layers", "units")
    }


def search_space(spec: JobSpec) -> kt.HyperParameters:
    """Declare every hyperparameter of the job, constants left out.

    A job that tunes nothing keeps its constants as Fixed hyperparameters: keras-tuner's Hyperband hands
    out no trial at all for an empty space (it takes the empty configuration for none).
    """
    tuned = [spec.model.hidden_layers, spec.model.units, *layer_free_params(spec).values()]
    constants = not any(is_tuned(param) for param in tuned)
    hp = kt.HyperParameters()
    _declare(hp, "hidden_layers", spec.model.hidden_layers, constants)
    for index in range(max(layer_counts(spec.model.hidden_layers))):
        with _when_layer_exists(hp, spec, index):
            _declare(hp, f"units_{index}", spec.model.units, constants)
    for name, param in layer_free_params(spec).items():
        _declare(hp, name, param, constants)
    return hp
