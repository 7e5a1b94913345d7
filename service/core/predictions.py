"""Predictions of a job's best model: the request's rows checked against the job's features, and the model's
outputs turned into labels, probabilities or values.

Pure (no TensorFlow): the API checks rows before a worker sees them, and the worker formats its outputs here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from service.core.catalog import Label, Task
from service.core.data_plan import FeatureInfo
from service.core.errors import MAX_FIELD_PROBLEMS, FieldProblem, InvalidRequest, shorten
from service.core.params import StrictModel

Cell = float | str


class PredictRequest(StrictModel):
    """Rows to predict: lists of values in the job's feature order, or objects keyed by feature name."""

    rows: list[Any] = Field(
        min_length=1,
        description="one list per row in the order of the job's `data.features` (numbers; strings for "
        'categorical features, "" when missing), or one object per row keyed by feature name',
        examples=[[[0, 1], [1, 1]]],
    )


class ClassPrediction(BaseModel):
    label: Label = Field(description="the most probable class")
    probabilities: dict[str, float] = Field(description="each class's probability, keyed by the class")


class ValuePrediction(BaseModel):
    value: float


class PredictionList(BaseModel):
    """One prediction per row, in the rows' order."""

    predictions: list[ClassPrediction | ValuePrediction]


def check_rows(rows: list[Any], features: Sequence[FeatureInfo], max_rows: int) -> list[list[Cell]]:
    """Each row as a list of cells in `features`' order: floats for numeric features, strings for
    categorical ones. Raises InvalidRequest naming `rows` or each bad `rows[i]`."""
    if len(rows) > max_rows:
        raise InvalidRequest(
            [
                FieldProblem(
                    "rows",
                    f"{len(rows)} rows is over this service's limit of {max_rows} per request "
                    "(KTUNE_PREDICT_MAX_ROWS): send them in several requests",
                )
            ]
        )
    checked: list[list[Cell]] = []
    problems: list[FieldProblem] = []
    for index, row in enumerate(rows):
        try:
            checked.append(_row(row, features))
        except ValueError as exc:
            problems.append(FieldProblem(f"rows[{index}]", str(exc)))
            if len(problems) == MAX_FIELD_PROBLEMS:
                break
    if problems:
        raise InvalidRequest(problems)
    return checked


def _row(row: Any, features: Sequence[FeatureInfo]) -> list[Cell]:
    names = [f.name for f in features]
    if isinstance(row, dict):
        unknown = [key for key in row if key not in names]
        if unknown:
            raise ValueError(
                f"unknown feature {shorten(str(unknown[0]))!r}: the job's features are {_shown(names)}"
            )
        missing = [name for name in names if name not in row]
        if missing:
            raise ValueError(f"feature {missing[0]!r} is missing: give every one of {_shown(names)}")
        values = [row[name] for name in names]
    elif isinstance(row, list):
        if len(row) != len(names):
            raise ValueError(
                f"has {len(row)} values but the job has {len(names)} features ({_shown(names)}); give one "
                "value per feature, in that order"
            )
        values = row
    else:
        raise ValueError("must be a list of feature values or an object keyed by feature name")
    return [_cell(value, feature) for value, feature in zip(values, features, strict=True)]


def _cell(value: Any, feature: FeatureInfo) -> Cell:
    if feature.type == "categorical":
        if value is None:
            return ""  # a missing category, as the model takes it
        if isinstance(value, str):
            return value
        raise ValueError(f'feature {feature.name!r} is categorical: give a string ("" when missing)')
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = "null" if value is None else shorten(repr(value), 40)
        raise ValueError(f"feature {feature.name!r} is numeric: give a number, not {shown}")
    if not math.isfinite(value):
        raise ValueError(f"feature {feature.name!r} is not a finite number")
    return float(value)


def _shown(names: list[str], limit: int = 10) -> str:
    listed = ", ".join(repr(shorten(n, 40)) for n in names[:limit])
    return listed + (f" and {len(names) - limit} more" if len(names) > limit else "")


def predictions_of(
    outputs: Sequence[Sequence[float]], task: Task, classes: Sequence[Label] | None
) -> list[dict[str, Any]]:
    """The model's output rows as predictions: a label with each class's probability (a binary model's
    single unit is the probability of classes[1]), or a regression value."""
    if task is Task.REGRESSION:
        return [{"value": float(row[0])} for row in outputs]
    assert classes is not None
    answers = []
    for row in outputs:
        if task is Task.BINARY_CLASSIFICATION:
            positive = float(row[0])
            probabilities = [1.0 - positive, positive]
        else:
            probabilities = [float(p) for p in row]
        best = max(range(len(classes)), key=probabilities.__getitem__)
        answers.append(
            {
                "label": classes[best],
                "probabilities": {str(c): p for c, p in zip(classes, probabilities, strict=True)},
            }
        )
    return answers
