"""Values of a job request that are either a constant or a hyperparameter to tune.

A number is `5`, `{"min": 1, "max": 3, "step": 1, "sampling": "linear"}` or `{"values": [1, 2, 3]}`;
a name is `"relu"` or `{"values": ["relu", "tanh"]}`.
"""

from __future__ import annotations

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
        raise ValueError(f"min ({low}) must not be greater than max ({high})")
    if sampling != "linear" and low <= 0:
        raise ValueError(f"{sampling} sampling needs min > 0, got {low}")
    if sampling != "linear" and step is not None and step <= 1:
        # keras-tuner multiplies by the step on a log scale, and rejects a step of 1 or less.
        raise ValueError(f"{sampling} sampling multiplies by step, so step must be over 1, got {step}")


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
