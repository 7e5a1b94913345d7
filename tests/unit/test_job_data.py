"""A job's data plan: inline splits, and a data-set reference checked against the data set's columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from service.core.datasets import ColumnInfo, DatasetInfo
from service.core.job_data import DatasetSource, prepare_dataset, prepare_inline
from service.core.settings import Limits
from service.core.spec import JobCreate, SpecError

IRIS_LIKE = {
    "x": [[float(i), float(i % 7)] for i in range(30)],
    "y": ["setosa"] * 10 + ["versicolor"] * 10 + ["virginica"] * 10,
}


def job(data: dict[str, Any], task: str = "multiclass_classification", **extra: Any) -> JobCreate:
    return JobCreate.model_validate({"task": task, "data": data, "tuner": {"seed": 3}, **extra}).resolved()


def test_inline_string_labels_become_classes_and_every_class_validates() -> None:
    plan, arrays = prepare_inline(job({"train": IRIS_LIKE}))
    assert plan.classes == ["setosa", "versicolor", "virginica"]
    assert plan.split.stratified and plan.split.seed == 3
    assert sorted(set(arrays.y_val.tolist())) == [0, 1, 2]
    assert plan.split.train_rows == 24 and plan.split.validation_rows == 6
    assert plan.warnings == []


def test_unshuffled_inline_data_keeps_keras_rule_and_warns_of_missing_classes() -> None:
    plan, arrays = prepare_inline(job({"train": IRIS_LIKE, "shuffle": False}))
    assert arrays.y_val.tolist() == [2] * 6
    assert not plan.split.shuffle
    assert len(plan.warnings) == 1 and "'setosa', 'versicolor'" in plan.warnings[0]


def test_the_same_seed_splits_the_same_rows() -> None:
    first, _ = prepare_inline(job({"train": IRIS_LIKE}))
    again, _ = prepare_inline(job({"train": IRIS_LIKE}))
    assert first.split.checksum == again.split.checksum


def test_inline_preprocessing_is_off_unless_asked() -> None:
    plan, _ = prepare_inline(job({"train": IRIS_LIKE}))
    assert plan.preprocessing is None
    plan, _ = prepare_inline(job({"train": IRIS_LIKE, "preprocessing": True}))
    assert plan.preprocessing is not None and plan.preprocessing.standardize
    assert not plan.preprocessing.scale_target  # a classifier's targets are not scaled


def column(
    name: str, kind: str, values: list[Any] | None = None, missing: int = 0, first: int | None = None
) -> ColumnInfo:
    return ColumnInfo(
        name=name,
        type=kind,  # type: ignore[arg-type]
        missing=missing,
        first_missing_row=first,
        distinct=None if values is None else len(values),
        values=values,
    )


def source(columns: list[ColumnInfo], table: pa.Table | None = None, rows: int = 40) -> DatasetSource:
    info = DatasetInfo(format="csv", rows=rows, columns=columns, size=10, sha256="0" * 64)
    return DatasetSource("11111111-1111-4111-8111-111111111111", False, info, lambda: table)


CITY = column("city", "categorical", ["Lyon", "Oslo", "Rome"])
LABEL = column("label", "categorical", ["no", "yes"])
LABELS = pa.table({"label": ["no", "yes"] * 20})


def dataset_job(task: str = "binary_classification", **data: Any) -> JobCreate:
    return job({"dataset": "11111111-1111-4111-8111-111111111111", **data}, task)


def test_a_dataset_reference_makes_a_plan_of_features_classes_and_split() -> None:
    columns = [column("age", "numeric"), CITY, column("comment", "text"), LABEL]
    prepared = prepare_dataset(dataset_job(target="label"), source(columns, LABELS), None, Limits())
    plan = prepared.plan
    assert [(f.name, f.type) for f in plan.features] == [("age", "numeric"), ("city", "categorical")]
    assert plan.classes == ["no", "yes"]
    assert plan.split.train_rows == 32 and plan.split.validation_rows == 8
    assert prepared.shape.features == 1 + 4  # age, and city one-hot with its slot for unknown cities
    assert any("comment" in w for w in plan.warnings)
    assert plan.preprocessing is not None and plan.preprocessing.standardize


@pytest.mark.parametrize(
    ("data", "columns", "field", "words"),
    [
        ({"target": "nope"}, [LABEL], "data.target", "has no column 'nope'"),
        ({}, [LABEL], "data.target", "give the label column"),
        ({"target": "label", "features": ["age", "x"]}, [LABEL], "data.features", "no column 'age', 'x'"),
        ({"target": "label", "features": ["label"]}, [LABEL, CITY], "data.features", "is the target"),
        (
            {"target": "label", "features": ["comment"]},
            [LABEL, column("comment", "text")],
            "data.features",
            "free text",
        ),
        ({"target": "city"}, [CITY, LABEL], "data.target", "exactly 2 classes, the target has 3"),
        ({"target": "one"}, [column("one", "numeric", [1.0]), CITY], "data.target", "single class"),
        (
            {"target": "label"},
            [column("age", "numeric", missing=3, first=6), LABEL],
            "data.features",
            "3 missing",
        ),
    ],
)
def test_dataset_problems_name_the_field(
    data: dict[str, Any], columns: list[ColumnInfo], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as caught:
        prepare_dataset(dataset_job(**data), source(columns, LABELS), None, Limits())
    assert caught.value.field == field
    assert words in caught.value.message


def test_missing_cells_name_the_first_data_row_and_the_fix() -> None:
    columns = [column("age", "numeric", missing=3, first=6), LABEL]
    with pytest.raises(SpecError, match=r"the first in data row 7: .*impute to 'mean'"):
        prepare_dataset(dataset_job(target="label"), source(columns, LABELS), None, Limits())
    allowed = dataset_job(target="label", preprocessing={"impute": "mean"})
    assert prepare_dataset(allowed, source(columns, LABELS), None, Limits()).plan.features[0].name == "age"


def test_regression_needs_a_numeric_target_and_scales_it() -> None:
    with pytest.raises(SpecError, match="regression needs a numeric target"):
        prepare_dataset(
            dataset_job("regression", target="city"), source([CITY, column("a", "numeric")]), None, Limits()
        )
    columns = [column("a", "numeric"), column("price", "numeric")]
    plan = prepare_dataset(dataset_job("regression", target="price"), source(columns), None, Limits()).plan
    assert plan.classes is None and plan.preprocessing is not None and plan.preprocessing.scale_target


def test_too_few_rows_for_the_split_is_refused() -> None:
    table = pa.table({"label": ["no", "yes"]})
    with pytest.raises(SpecError, match="leaves no row to validate"):
        prepare_dataset(
            dataset_job(target="label"),
            source([column("a", "numeric"), LABEL], table, rows=2),
            None,
            Limits(),
        )


def test_a_dataset_over_the_class_limit_is_refused() -> None:
    many = column("kind", "categorical", [f"k{i}" for i in range(12)])
    table = pa.table({"kind": [f"k{i % 12}" for i in range(40)]})
    with pytest.raises(SpecError, match="12 classes, over this service's limit of 10"):
        prepare_dataset(
            dataset_job("multiclass_classification", target="kind"),
            source([column("a", "numeric"), many], table),
            None,
            Limits(max_classes=10),
        )


def test_stratified_dataset_split_validates_every_class() -> None:
    table = pa.table({"label": ["no"] * 36 + ["yes"] * 4})
    plan = prepare_dataset(
        dataset_job(target="label"), source([column("a", "numeric"), LABEL], table), None, Limits()
    ).plan
    assert plan.split.stratified and plan.split.validation_rows == 8
    assert plan.warnings == []
    assert np.isclose(plan.split.fraction or 0, 0.2)


def test_infinite_values_in_a_feature_are_refused() -> None:
    infinite = column("size", "numeric").model_copy(update={"min": 0.0, "max": float("inf")})
    with pytest.raises(SpecError, match="'size' holds infinite values"):
        prepare_dataset(dataset_job(target="label"), source([infinite, LABEL], LABELS), None, Limits())


def test_rows_that_disagree_with_the_reported_classes_are_a_problem_not_a_crash() -> None:
    table = pa.table({"label": ["no", "yes", "maybe"] * 10})
    with pytest.raises(SpecError, match="column 'label': 10 labels are not among the classes"):
        columns = [column("a", "numeric"), LABEL]
        prepare_dataset(dataset_job(target="label"), source(columns, table), None, Limits())
