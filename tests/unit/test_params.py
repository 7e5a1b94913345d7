"""How many values keras-tuner lists for a hyperparameter (`service.core.params.value_count`, `grid_values`).

tests/unit/test_space.py checks these counts against keras-tuner itself; here they are pinned to numbers
worked out by hand from keras-tuner's formulas, including where its arithmetic overflows.
"""

from __future__ import annotations

import math

import pytest

from service.core.params import (
    FloatChoice,
    FloatRange,
    IntChoice,
    IntRange,
    NameChoice,
    grid_values,
    value_count,
)


@pytest.mark.parametrize(
    ("param", "count"),
    [
        (5, 1),
        (0.5, 1),
        ("relu", 1),
        (IntChoice(values=[4, 8, 16]), 3),
        (FloatChoice(values=[0.1]), 1),
        (NameChoice(values=["relu", "tanh"]), 2),
        # An Int range with linear sampling steps by 1 unless told otherwise.
        (IntRange(min=2, max=20), 19),
        (IntRange(min=32, max=512, step=32), 16),
        (IntRange(min=1, max=10, step=4), 3),  # 1, 5, 9
        (IntRange(min=8, max=8), 1),
        # Log sampling multiplies by the step: 1, 2, 4 ... 64.
        (IntRange(min=1, max=64, step=2, sampling="log"), 7),
        # Without a step, 10 evenly spread samples and the default (min) when no sample hits it.
        (FloatRange(min=0.0, max=0.3), 11),
        (FloatRange(min=1e-4, max=1e-1, sampling="log"), 11),
        (FloatRange(min=0.1, max=0.1), 1),
        (FloatRange(min=0.0, max=0.5, step=0.125), 5),
        (FloatRange(min=1e-4, max=1e-1, step=10.0, sampling="log"), 4),
        # A reverse_log grid starts at max; the default, min, is walked first as well.
        (FloatRange(min=1.0, max=100.0, step=2.0, sampling="reverse_log"), 8),
        (FloatRange(min=1.0, max=8.0, step=2.0, sampling="reverse_log"), 4),  # 8, 7, 5, 1: min is listed
    ],
)
def test_value_count(param: object, count: int) -> None:
    assert value_count(param) == count


def test_a_tiny_step_is_counted_without_listing() -> None:
    assert value_count(FloatRange(min=0.0, max=0.5, step=1e-12)) == 500_000_000_001


@pytest.mark.parametrize(
    "param",
    [
        # (max - min) / step is infinite: keras-tuner's int() of it raises OverflowError in the worker.
        FloatRange(min=1e-300, max=1e300, step=1e-300),
        FloatRange(min=-1e308, max=1e308, step=1.0),
        # max / min is infinite: log sampling would give infinite values, with or without a step.
        FloatRange(min=1e-300, max=1e300, sampling="log"),
        FloatRange(min=1e-300, max=1e300, step=10.0, sampling="log"),
        FloatRange(min=1e-300, max=1e300, sampling="reverse_log"),
        FloatRange(min=-1e308, max=1e308),
    ],
)
def test_overflowing_ranges_count_as_infinite(param: FloatRange) -> None:
    assert value_count(param) == math.inf


@pytest.mark.parametrize(
    ("param", "values"),
    [
        (3, [3]),
        (IntChoice(values=[4, 1]), [4, 1]),
        (IntRange(min=2, max=5), [2, 3, 4, 5]),
        (IntRange(min=1, max=10, step=4), [1, 5, 9]),
        (IntRange(min=1, max=32, step=2, sampling="log"), [1, 2, 4, 8, 16, 32]),
    ],
)
def test_grid_values(param: int | IntRange | IntChoice, values: list[int]) -> None:
    assert grid_values(param) == values
    assert len(values) == value_count(param)
