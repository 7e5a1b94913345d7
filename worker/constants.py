"""A job's constants: the values of its configuration that the search does not tune.

They are not keras-tuner hyperparameters (so they do not count toward the search's dimensions, or show as
tuned), but a trial needs them to build and train its model, and its record keeps them beside its
hyperparameters, under the names a hyperparameter of that field would have (`units_0`, `batch_size` ...).
Searches stored before constants left the space still hand out trials whose values hold them: a trial's
configuration is the same either way.
"""

from __future__ import annotations

from typing import Any

from service.core.params import is_tuned
from service.core.spec import JobSpec
from worker.space import layer_free_params


def constants(spec: JobSpec, values: dict[str, Any]) -> dict[str, Any]:
    """The job's constants for a trial with these hyperparameter values: units of each layer the trial has
    (when units are constant), then every other constant field, in the order of the search space."""
    model = spec.model
    found: dict[str, Any] = {}
    if not is_tuned(model.hidden_layers):
        found["hidden_layers"] = model.hidden_layers
    layers = found.get("hidden_layers", values.get("hidden_layers"))
    if not is_tuned(model.units) and layers is not None:
        found.update({f"units_{index}": model.units for index in range(int(layers))})
    found.update({name: value for name, value in layer_free_params(spec).items() if not is_tuned(value)})
    return found


def split(spec: JobSpec, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's values as (hyperparameters, constants): what the search chose, and the job's constants
    (taken out of the values, where an older search registered them as fixed hyperparameters)."""
    fixed = constants(spec, values)
    return {name: value for name, value in values.items() if name not in fixed}, fixed


def configuration(spec: JobSpec, values: dict[str, Any]) -> dict[str, Any]:
    """Everything a trial builds and trains its model with: its hyperparameter values and the constants."""
    return {**constants(spec, values), **values}
