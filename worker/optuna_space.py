"""A job's search space as Optuna distributions, for the `tpe` and `cmaes` algorithms.

It is read from the same keras-tuner space every other algorithm searches (`worker.space`), so a trial's
values have the same names, constants and conditions (units of a layer only when the layer exists). Where
Optuna has no distribution for a keras-tuner range, Optuna samples a stand-in that maps onto it one to one:
a stepped log range (keras-tuner multiplies by its step) or a stepped float range by the index of its
listed values, a reverse_log range as a log range mirrored inside its bounds, a list of numbers by its
index in order (so both samplers see which values are near each other).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras_tuner as kt
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from service.core.spec import JobSpec
from worker.space import search_space


@dataclass(frozen=True)
class Param:
    """One hyperparameter: what Optuna samples for it (None for a constant) and how that becomes its value."""

    name: str
    distribution: BaseDistribution | None
    constant: Any = None
    listed: tuple[Any, ...] = ()  # the value is listed[sampled index]
    mirror: float | None = None  # reverse_log: the value is mirror - sampled
    conditions: tuple[Any, ...] = ()  # keras-tuner conditions on earlier values

    def value(self, sampled: Any) -> Any:
        """The hyperparameter's value for what Optuna sampled."""
        if self.distribution is None:
            return self.constant
        if self.listed:
            return self.listed[int(sampled)]
        if self.mirror is not None:
            mirrored = self.mirror - sampled
            return int(mirrored) if isinstance(self.distribution, IntDistribution) else mirrored
        return sampled

    def sampled_for(self, value: Any) -> Any:
        """What Optuna samples for the hyperparameter to be `value`, one of its values (`value` inverted)."""
        if self.listed:
            return min(range(len(self.listed)), key=lambda index: abs(self.listed[index] - value))
        if self.mirror is not None:
            mirrored = self.mirror - value
            return int(mirrored) if isinstance(self.distribution, IntDistribution) else mirrored
        return value

    def is_active(self, values: dict[str, Any]) -> bool:
        """Whether the hyperparameter exists for a trial with these earlier values."""
        return all(condition.is_active(values) for condition in self.conditions)


def optuna_space(spec: JobSpec) -> list[Param]:
    """The job's hyperparameters in the order they are sampled (a condition's parent first)."""
    return [_param(hp) for hp in search_space(spec).space]


def _param(hp: Any) -> Param:
    conditions = tuple(hp.conditions)
    hp_types = kt.engine.hyperparameters
    if isinstance(hp, hp_types.Fixed):
        return Param(hp.name, None, constant=hp.value, conditions=conditions)
    if isinstance(hp, hp_types.Boolean):
        return Param(hp.name, CategoricalDistribution((False, True)), conditions=conditions)
    if isinstance(hp, hp_types.Choice):
        values = list(hp.values)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return _listed(hp.name, sorted(values), conditions)
        return Param(hp.name, CategoricalDistribution(tuple(values)), conditions=conditions)
    is_int = isinstance(hp, hp_types.Int)
    low, high, step, sampling = hp.min_value, hp.max_value, hp.step, hp.sampling
    if sampling == "linear" and is_int:
        step = step or 1
        return Param(
            hp.name, IntDistribution(low, low + (high - low) // step * step, step=step), conditions=conditions
        )
    if step is not None:
        listed = sorted({int(v) if is_int else float(v) for v in hp.values})
        return _listed(hp.name, listed, conditions)
    log = sampling != "linear"
    distribution = IntDistribution(low, high, log=True) if is_int else FloatDistribution(low, high, log=log)
    mirror = low + high if sampling == "reverse_log" else None
    return Param(hp.name, distribution, mirror=mirror, conditions=conditions)


def _listed(name: str, values: list[Any], conditions: tuple[Any, ...]) -> Param:
    if len(values) == 1:
        return Param(name, None, constant=values[0], conditions=conditions)
    return Param(name, IntDistribution(0, len(values) - 1), listed=tuple(values), conditions=conditions)


def active(space: list[Param], values: dict[str, Any]) -> Iterator[Param]:
    """The hyperparameters a trial with `values` (filled in as it is sampled) has, in order."""
    for param in space:
        if param.is_active(values):
            yield param
