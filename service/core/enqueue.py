"""Trials a job tries first (`tuner.enqueue`, Optuna's `enqueue_trial`): each entry's values checked against
the job's search space, and written out as the worker uses them.

An entry names hyperparameters as trials show them (`hidden_layers`, `units_0`, `units_1` ...,
`activation`, `dropout`, `optimizer`, `learning_rate`, `batch_size`). A value must be one the search could
pick: within a range (on its step, if it has one), one of a choice's values, or a constant's own value.
Names an entry leaves out are drawn at random by the search, as for any trial. Pure Python: no keras-tuner.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from service.core.errors import shorten
from service.core.params import (
    FloatChoice,
    FloatRange,
    IntChoice,
    IntRange,
    NameChoice,
    bounds,
    is_tuned,
)

if TYPE_CHECKING:
    from service.core.spec import JobSpec

_UNITS = re.compile(r"units_(0|[1-9][0-9]{0,8})")


class EnqueueError(ValueError):
    """An entry of tuner.enqueue does not fit the search space; `field` names the value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _params(spec: JobSpec) -> dict[str, tuple[str, object]]:
    """Each hyperparameter but the units by its name: the request field that defines it, and its value."""
    from service.core.spec import named_params  # here: the spec module imports this one

    return {name: param for name, param in named_params(spec).items() if name != "units"}


def enqueued_values(spec: JobSpec) -> list[dict[str, Any]]:
    """`spec.tuner.enqueue` with every value checked and as the search space types it (an integral 16.0
    of an integer hyperparameter is 16, a choice's value is the choice's own). Raises EnqueueError."""
    entries = spec.tuner.enqueue or []
    if len(entries) > spec.tuner.max_trials:
        raise EnqueueError(
            "tuner.enqueue",
            f"{len(entries)} entries, more than tuner.max_trials ({spec.tuner.max_trials}): each runs as one "
            "of the job's trials; give fewer entries or raise max_trials",
        )
    return [_entry(spec, f"tuner.enqueue[{index}]", entry) for index, entry in enumerate(entries)]


def checked_values(spec: JobSpec, where: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameter values (as trials show them) checked against the job's search space and typed as it
    types them, as an entry of tuner.enqueue is (`tuner.warm_start` checks earlier trials so). Raises
    EnqueueError, its field `where` and the name."""
    return _entry(spec, where, entry)


def _entry(spec: JobSpec, where: str, entry: dict[str, Any]) -> dict[str, Any]:
    params = _params(spec)
    layers = spec.model.hidden_layers
    checked: dict[str, Any] = {}
    # hidden_layers first: whether a layer's units exist depends on it.
    for name in sorted(entry, key=lambda name: name != "hidden_layers"):
        field = f"{where}.{shorten(name, 60)}"
        if name in params:
            source, param = params[name]
            checked[name] = _value(field, source, param, entry[name])
        elif _UNITS.fullmatch(name):
            layer = int(name.removeprefix("units_"))
            _check_layer(field, name, layer, layers, checked.get("hidden_layers"))
            checked[name] = _value(field, "model.units", spec.model.units, entry[name])
        else:
            raise EnqueueError(field, _unknown(name, layers))
    return {name: checked[name] for name in entry}


def _unknown(name: str, layers: object) -> str:
    most = int(bounds(layers)[1])  # type: ignore[arg-type]
    units = "units_0" if most == 1 else f"units_0 .. units_{most - 1}"
    known = f"hidden_layers, {units}, activation, dropout, optimizer, learning_rate, batch_size"
    if name == "units":
        return f"units are set per layer: give units_0, units_1 ... (this job's names: {known})"
    return f"is not a hyperparameter of this job: its names are {known}"


def _check_layer(field: str, name: str, layer: int, layers: object, given_layers: int | None) -> None:
    """Raise unless layer `layer` (counting from 0) exists in every model the entry can make."""
    least, most = (int(bound) for bound in bounds(layers))  # type: ignore[arg-type]
    if layer >= most:
        names = "units_0" if most == 1 else f"units_0 .. units_{most - 1}"
        raise EnqueueError(
            field,
            f"this job's models have at most {most} hidden layers, so {name} does not exist: "
            f"give {names} only",
        )
    if given_layers is not None and layer >= given_layers:
        raise EnqueueError(
            field, f"the entry's hidden_layers is {given_layers}, so {name} does not exist: leave it out"
        )
    if given_layers is None and layer >= least:
        raise EnqueueError(
            field,
            f"{name} exists only in models of more than {layer} hidden layers: give hidden_layers in the "
            "entry too",
        )


def _value(field: str, source: str, param: object, value: Any) -> Any:
    """The value as the search space types it; raises EnqueueError unless the search could pick it."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise EnqueueError(field, "must be a number or a name (a string)")
    if isinstance(value, float) and not math.isfinite(value):
        raise EnqueueError(field, "must be a finite number")
    if not is_tuned(param):
        if value != param or isinstance(value, str) != isinstance(param, str):
            raise EnqueueError(
                field, f"{source} is the constant {param!r} in this job: leave it out, or give {param!r}"
            )
        return param
    if isinstance(param, NameChoice):
        if value not in param.values:
            raise EnqueueError(field, _not_a_choice(value, source, param.values))
        return value
    if isinstance(value, str):
        raise EnqueueError(field, f"must be a number: {source} is numeric")
    if isinstance(param, IntChoice | FloatChoice):
        for choice in param.values:
            if choice == value:
                return choice
        raise EnqueueError(field, _not_a_choice(value, source, param.values))
    assert isinstance(param, IntRange | FloatRange)
    if isinstance(param, IntRange) and isinstance(value, float):
        if not value.is_integer():
            raise EnqueueError(field, f"must be a whole number: {source} is an integer range")
        value = int(value)
    # Compared before any conversion: an integer of 400 digits is no float.
    if not param.min <= value <= param.max:
        raise EnqueueError(
            field,
            f"{_quoted(value)} is outside {source}'s range: give a number from {_quoted(param.min)} to "
            f"{_quoted(param.max)}",
        )
    if isinstance(param, FloatRange):
        value = float(value)
    if not _on_step(param, value):
        raise EnqueueError(
            field,
            f"{_quoted(value)} is not a value {source} takes with step {_quoted(param.step)} and "
            f"{param.sampling} sampling: give one of {_first_steps(param)}, ...",
        )
    return value


def _quoted(value: object) -> str:
    return shorten(repr(value), 40)


def _not_a_choice(value: object, source: str, values: list[Any]) -> str:
    return f"{_quoted(value)} is not one of {source}'s values: choose from {shorten(repr(values), 200)}"


# A range with a step takes keras-tuner's values (keras_tuner.src.engine.hyperparameters.hp_types): min plus
# a multiple of step (linear), min times a power of step (log), or max + min less that (reverse_log); an Int
# range truncates each. Its min, the range's default, is always one of them.


def _step_value(param: IntRange | FloatRange, index: int) -> float:
    step = param.step or 1
    if param.sampling == "linear":
        value = param.min + index * step
    elif param.sampling == "log":
        value = param.min * math.pow(step, index)
    else:
        value = param.max + param.min - param.min * math.pow(step, index)
    return int(value) if isinstance(param, IntRange) else value


def _on_step(param: IntRange | FloatRange, value: float) -> bool:
    step = param.step
    if step is None or value == param.min:
        return True
    if isinstance(param, IntRange) and param.sampling == "linear":
        return (int(value) - param.min) % int(step) == 0
    try:
        if param.sampling == "linear":
            index = (value - param.min) / step
        else:
            base = value if param.sampling == "log" else param.max + param.min - value
            if base <= 0:
                return False
            index = math.log(base / param.min, step)
        nearest = round(index)
        if isinstance(param, IntRange):
            return any(_step_value(param, i) == value for i in (nearest - 1, nearest, nearest + 1) if i >= 0)
        return nearest >= 0 and abs(index - nearest) <= 1e-6 * max(1.0, abs(index))
    except (OverflowError, ValueError, ZeroDivisionError):
        return False


def _first_steps(param: IntRange | FloatRange) -> str:
    values: list[float] = []
    for index in range(4):
        try:
            value = _step_value(param, index)
        except OverflowError:
            break
        if not param.min <= value <= param.max or value in values:
            break
        values.append(value)
    return ", ".join(_quoted(value) for value in sorted({param.min, *values})[:3])
