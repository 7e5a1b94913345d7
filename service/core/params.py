"""Values of a job request that are either a constant or a hyperparameter to tune.

A number is `5`, `{"min": 1, "max": 3, "step": 1, "sampling": "linear"}` or `{"values": [1, 2, 3]}`;
a name is `"relu"` or `{"values": ["relu", "tanh"]}`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from service.core.errors import shorten

Sampling = Literal["linear", "log", "reverse_log"]


def _not_bool(value: Any) -> Any:
    # Pydantic's lax mode would read JSON true/false as 1/0; a flag is never a number here.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


# Numbers of a request: never a bool; floats finite, as NaN and infinity can't be trained or stored as JSON.
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool), AllowInfNan(False)]


class StrictModel(BaseModel):
    """A request section: unknown fields are rejected so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


class IntRange(StrictModel):
    """An integer hyperparameter from min to max inclusive."""

    min: Int
    max: Int
    step: Int | None = Field(None, ge=1)
    sampling: Sampling = "linear"

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        _check_range(self.min, self.max, self.step, self.sampling)
        return self


class FloatRange(StrictModel):
    """A float hyperparameter from min to max inclusive."""

    min: Float
    max: Float
    step: Float | None = Field(None, gt=0)
    sampling: Sampling = "linear"

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        _check_range(self.min, self.max, self.step, self.sampling)
        return self


class IntChoice(StrictModel):
    """An integer hyperparameter that takes one of the listed values."""

    values: list[Int] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> IntChoice:
        _check_unique(self.values)
        return self


class FloatChoice(StrictModel):
    """A float hyperparameter that takes one of the listed values."""

    values: list[Float] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> FloatChoice:
        _check_unique(self.values)
        return self


class NameChoice(StrictModel):
    """A categorical hyperparameter that takes one of the listed names."""

    values: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> NameChoice:
        _check_unique(self.values)
        return self


def _check_range(low: float, high: float, step: float | None, sampling: str) -> None:
    if low > high:
        raise ValueError(f"min ({_text(low)}) must not be greater than max ({_text(high)})")
    if sampling != "linear" and low <= 0:
        raise ValueError(f"{sampling} sampling needs min > 0, got {_text(low)}")
    if sampling != "linear" and step is not None and step <= 1:
        # keras-tuner multiplies by the step on a log scale, and rejects a step of 1 or less.
        raise ValueError(f"{sampling} sampling multiplies by step, so step must be over 1, got {_text(step)}")


def _text(number: float) -> str:
    # A JSON integer may have thousands of digits; a message quotes a prefix.
    return shorten(str(number), 40)


def _check_unique(values: list[Any]) -> None:
    if len(set(values)) != len(values):
        raise ValueError("values must not repeat")


# The tags below appear in Pydantic's error locations; service.api.errors drops them from field paths.
PARAM_TAGS = ("constant", "range", "choice")
_SHAPE_HINT = 'a constant, {"min": .., "max": .., "step"?: .., "sampling"?: ..} or {"values": [..]}'


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "choice" if "values" in value else "range"
    if isinstance(value, IntRange | FloatRange):
        return "range"
    if isinstance(value, IntChoice | FloatChoice | NameChoice):
        return "choice"
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        return "constant"
    return None


def _discriminator() -> Discriminator:
    return Discriminator(
        _kind,
        custom_error_type="invalid_hyperparameter",
        custom_error_message=f"must be {_SHAPE_HINT}",
        custom_error_context={"discriminator": "kind"},
    )


IntParam = Annotated[
    Annotated[int, Tag("constant")] | Annotated[IntRange, Tag("range")] | Annotated[IntChoice, Tag("choice")],
    _discriminator(),
]
FloatParam = Annotated[
    Annotated[Float, Tag("constant")]
    | Annotated[FloatRange, Tag("range")]
    | Annotated[FloatChoice, Tag("choice")],
    _discriminator(),
]
NameParam = Annotated[
    Annotated[str, Tag("constant")] | Annotated[NameChoice, Tag("choice")],
    _discriminator(),
]


def is_tuned(param: object) -> bool:
    """Whether a value is a hyperparameter rather than a constant."""
    return isinstance(param, IntRange | FloatRange | IntChoice | FloatChoice | NameChoice)


def bounds(param: int | float | IntRange | FloatRange | IntChoice | FloatChoice) -> tuple[float, float]:
    """The smallest and largest value a numeric parameter can take."""
    if isinstance(param, IntRange | FloatRange):
        return param.min, param.max
    if isinstance(param, IntChoice | FloatChoice):
        return min(param.values), max(param.values)
    return param, param


def names(param: str | NameChoice) -> list[str]:
    """Every name a categorical parameter can take."""
    return list(param.values) if isinstance(param, NameChoice) else [param]


# --- what keras-tuner lists for a parameter -----------------------------------------------------------
# Mirrors keras_tuner.src.engine.hyperparameters.hp_types (Numerical.values, Int, Float) and the grid
# oracle, which walks `[hp.default] + [v for v in hp.values if v != hp.default]` for every hyperparameter:
# a range with a step lists every step, one without lists 10 evenly spread samples (an Int range with
# linear sampling has a step of 1 by default). Counting never lists, so a huge grid costs nothing here.

_SAMPLE_PROBS = tuple(i * 0.1 + 0.05 for i in range(10))


def _sample(low: float, high: float, prob: float, sampling: str) -> float:
    # keras-tuner's Numerical._sample_numerical_value.
    if sampling == "linear":
        return prob * (high - low) + low
    if sampling == "log":
        return low * math.pow(high / low, prob)
    return high + low - low * math.pow(high / low, 1 - prob)


def _samples(param: IntRange | FloatRange) -> list[float]:
    """The values keras-tuner lists for a range without a step; raises OverflowError on overflow."""
    if isinstance(param, IntRange):
        # Int.prob_to_value samples up to max + 1 and truncates.
        return [int(_sample(param.min, param.max + 1, p, param.sampling)) for p in _SAMPLE_PROBS]
    samples = [_sample(param.min, param.max, p, param.sampling) for p in _SAMPLE_PROBS]
    if not all(math.isfinite(value) for value in samples):
        raise OverflowError("the range's arithmetic overflows")
    return samples


def _effective_step(param: IntRange | FloatRange) -> float | None:
    if param.step is None and isinstance(param, IntRange) and param.sampling == "linear":
        return 1
    return param.step


def _stepped_count(param: IntRange | FloatRange, step: float) -> int:
    """keras-tuner's Numerical._get_n_values; raises OverflowError where keras-tuner would fail too."""
    if param.sampling == "linear":
        # Exact for ints; float `//` gives inf or nan where the worker's int() would raise.
        steps = (param.max - param.min) // step
    else:
        steps = math.log(param.max / param.min, step) + 1e-8
    if not math.isfinite(steps):
        raise OverflowError("the range's number of steps overflows")
    return int(steps) + 1


def _lists_its_min(param: IntRange | FloatRange, step: float, count: int) -> bool:
    # The grid starts at the default (min); linear and log grids start at min, a reverse_log grid at max.
    if param.sampling != "reverse_log":
        return True
    index = round(math.log(param.max / param.min, step))
    return 0 <= index < count and param.max + param.min - param.min * math.pow(step, index) == param.min


def value_count(param: object) -> float:
    """How many values a grid search walks for this parameter, or math.inf where keras-tuner's arithmetic
    overflows.

    Overflow is a step too fine for its range, or a log range whose max / min is not a finite number:
    the worker would raise OverflowError, or sample infinite values.
    """
    if isinstance(param, IntChoice | FloatChoice | NameChoice):
        return len(param.values)
    if not isinstance(param, IntRange | FloatRange):
        return 1
    try:
        step = _effective_step(param)
        if step is None:
            listed = set(_samples(param))
            return len(listed) + (param.min not in listed)
        count = _stepped_count(param, step)
        return count + (not _lists_its_min(param, step, count))
    except (OverflowError, ValueError, ZeroDivisionError):
        return math.inf


def grid_values(param: int | IntRange | IntChoice) -> list[int]:
    """The integer values a grid search walks, as whole numbers; call only when value_count is small."""
    if isinstance(param, IntChoice):
        return list(param.values)
    if not isinstance(param, IntRange):
        return [param]
    step = _effective_step(param)
    if step is None:
        listed = [int(value) for value in _samples(param)]
    else:
        count = _stepped_count(param, step)
        if param.sampling == "linear":
            listed = [int(param.min + index * step) for index in range(count)]
        elif param.sampling == "log":
            listed = [int(param.min * math.pow(step, index)) for index in range(count)]
        else:
            listed = [
                int(param.max + param.min - param.min * math.pow(step, index)) for index in range(count)
            ]
    return sorted({param.min, *listed})
