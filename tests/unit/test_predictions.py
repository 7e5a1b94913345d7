"""Rows checked against a job's features, and model outputs as predictions (`service.core.predictions`)."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.catalog import Task
from service.core.data_plan import FeatureInfo
from service.core.errors import InvalidRequest
from service.core.predictions import check_rows, predictions_of

FEATURES = [FeatureInfo(name="size", type="numeric"), FeatureInfo(name="colour", type="categorical")]


def problems(rows: list[Any], max_rows: int = 10) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRequest) as raised:
        check_rows(rows, FEATURES, max_rows)
    return [(p.field, p.message) for p in raised.value.fields]


def test_lists_and_objects_become_cells_in_feature_order() -> None:
    rows = [[1, "red"], {"colour": "blue", "size": 2.5}, [3, None]]
    assert check_rows(rows, FEATURES, 10) == [[1.0, "red"], [2.5, "blue"], [3.0, ""]]


def test_too_many_rows_name_rows_and_the_limit() -> None:
    [(field, message)] = problems([[1, "a"]] * 3, max_rows=2)
    assert field == "rows" and "limit of 2" in message and "KTUNE_PREDICT_MAX_ROWS" in message


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ([1], "has 1 values but the job has 2 features"),
        (["1", "red"], "'size' is numeric"),
        ([float("nan"), "red"], "not a finite number"),
        ([False, "red"], "'size' is numeric"),
        ([1, 2], "'colour' is categorical"),
        ({"size": 1}, "'colour' is missing"),
        ({"size": 1, "colour": "a", "weight": 2}, "unknown feature 'weight'"),
        ("1,red", "must be a list"),
    ],
)
def test_each_bad_row_is_named(row: Any, words: str) -> None:
    found = problems([[1, "ok"], row])
    assert [field for field, _ in found] == ["rows[1]"]
    assert words in found[0][1]


def test_every_bad_row_is_reported() -> None:
    assert [field for field, _ in problems([[1], [1, "a"], ["x", "a"]])] == ["rows[0]", "rows[2]"]


def test_binary_outputs_are_the_probability_of_the_second_class() -> None:
    [low, high] = predictions_of([[0.2], [0.9]], Task.BINARY_CLASSIFICATION, ["no", "yes"])
    assert low == {"label": "no", "probabilities": {"no": pytest.approx(0.8), "yes": 0.2}}
    assert high["label"] == "yes"


def test_multiclass_outputs_keep_the_labels_type_and_key_probabilities_by_text() -> None:
    [answer] = predictions_of([[0.1, 0.7, 0.2]], Task.MULTICLASS_CLASSIFICATION, [0, 1, 2])
    assert answer == {"label": 1, "probabilities": {"0": 0.1, "1": 0.7, "2": 0.2}}


def test_regression_outputs_are_values() -> None:
    assert predictions_of([[1.5], [-2.0]], Task.REGRESSION, None) == [{"value": 1.5}, {"value": -2.0}]
