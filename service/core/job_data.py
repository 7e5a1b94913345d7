"""A job's data from its request to its plan: labels mapped to classes, rows split, every rule checked.

`prepare_inline` takes inline arrays (in the API's parse process for large bodies); `prepare_dataset`
checks a data-set reference against the data set's columns (what was learned when it was uploaded), so
nothing is queued that a worker would fail on: every problem is a `SpecError` naming the field.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from service.core.catalog import Label, Task, output_units
from service.core.data_codec import DataArrays, encode
from service.core.data_plan import DataPlan, FeatureInfo, SplitInfo
from service.core.dataset_models import ColumnInfo, DatasetInfo, DatasetSource
from service.core.labels import (
    LabelError,
    as_labels,
    check_classes,
    classes_of,
    column_indices,
    to_indices,
)
from service.core.settings import Limits
from service.core.spec import DataShape, JobCreate, PreprocessingSpec, SpecError, check_limits
from service.core.splits import Split, split_rows

_SHOWN = 20  # column names listed in a message


def split_seed(spec: JobCreate) -> int:
    """The seed of the job's split: tuner.seed, or one drawn now (and recorded in the plan)."""
    return spec.tuner.seed if spec.tuner.seed is not None else secrets.randbelow(2**31)


def resolved_preprocessing(spec: JobCreate) -> PreprocessingSpec | None:
    """The request's preprocessing with scale_target only where it applies (regression)."""
    options = spec.data.preprocessing_options()
    if options is None:
        return None
    applies = spec.task is Task.REGRESSION
    return options.model_copy(update={"scale_target": options.scale_target and applies})


def prepare_inline(spec: JobCreate) -> tuple[DataPlan, DataArrays]:
    """The plan and split arrays of inline data (already validated by `JobCreate`)."""
    data, task = spec.data, spec.task
    assert data.train is not None
    x = np.asarray(data.train.x, dtype=np.float32)
    classes = spec.classes
    y = _targets(data.train.y, task, classes)
    seed: int | None = None
    if data.validation is not None:
        x_val = np.asarray(data.validation.x, dtype=np.float32)
        y_val = _targets(data.validation.y, task, classes)
        split = Split(np.arange(len(x)), np.arange(len(x_val)))
        method = "validation"
    else:
        seed = split_seed(spec) if data.shuffle else None
        split = split_rows(
            len(x), data.effective_split, seed or 0, data.shuffle, y if classes is not None else None
        )
        x, y, x_val, y_val = x[split.train], y[split.train], x[split.validation], y[split.validation]
        method = "validation_split"
    plan = DataPlan(
        source="inline",
        features=[FeatureInfo(name=f"x{i}", type="numeric") for i in range(x.shape[1])],
        classes=classes,
        split=_split_info(spec, method, split, seed, classes is not None),
        preprocessing=resolved_preprocessing(spec),
        warnings=_missing_classes(classes, y, y_val),
    )
    return plan, DataArrays(x, y, x_val, y_val)


def stored_inline(spec: JobCreate) -> tuple[DataPlan, bytes]:
    """The plan of inline data and the job's stored data (`data_codec`'s form)."""
    plan, arrays = prepare_inline(spec)
    return plan, encode(plan, arrays)


def _targets(values: list[float | str], task: Task, classes: list[Label] | None) -> np.ndarray:
    if classes is None:
        return np.asarray(values, dtype=np.float32)
    return to_indices(as_labels(values), classes)


def _split_info(spec: JobCreate, method: str, split: Split, seed: int | None, classifier: bool) -> SplitInfo:
    shuffled = method == "validation_split" and spec.data.shuffle
    return SplitInfo(
        method=method,
        fraction=spec.data.effective_split if method == "validation_split" else None,
        shuffle=shuffled,
        stratified=shuffled and classifier,
        seed=seed,
        train_rows=len(split.train),
        validation_rows=len(split.validation),
        checksum=split.checksum,
    )


def _missing_classes(classes: list[Label] | None, y: np.ndarray, y_val: np.ndarray) -> list[str]:
    if classes is None:
        return []
    absent = sorted(set(np.unique(y).tolist()) - set(np.unique(y_val).tolist()))
    if not absent:
        return []
    names = ", ".join(repr(classes[i]) for i in absent[:_SHOWN])
    return [
        f"the validation rows lack {len(absent)} of the training rows' classes ({names}): the objective "
        "says nothing about them; send more rows of those classes or a larger validation_split"
    ]


@dataclass(frozen=True)
class PreparedDataset:
    """A data-set job's plan, and the data shape the service's limits are checked against."""

    plan: DataPlan
    shape: DataShape


def prepare_dataset(
    spec: JobCreate, source: DatasetSource, validation: DatasetSource | None, limits: Limits
) -> PreparedDataset:
    """Check the job's data-set reference against the data set; raises SpecError naming the field."""
    data, task, info = spec.data, spec.task, source.info
    target = data.target or _default_target(source)
    target_column = info.column(target)
    if target_column is None:
        raise SpecError(
            "data.target" if data.target else "data",
            f"data set '{source.ref}' has no column '{target}'"
            + ("" if data.target else " (the default target)")
            + f": choose one of {_names(info.columns)}",
        )
    features = _features(data.features, target, info)
    options = resolved_preprocessing(spec) or PreprocessingSpec(standardize=False, scale_target=False)
    _check_missing(info, [target_column], "data.target", impute=None)
    used = [column for f in features if (column := info.column(f.name)) is not None]
    _check_missing(info, used, "data.features", options.impute)
    _check_finite([target_column], "data.target")
    _check_finite(used, "data.features")
    classes = _classes(task, target_column, limits.max_classes)
    if validation is not None:
        _check_validation_dataset(validation, features, target, task, classes, options.impute)
    labels = None  # each row's class, read once: to stratify the split and to check what it validates
    if classes is not None and validation is None:
        try:
            labels = dataset_labels(source.table(), target, classes)
        except LabelError as exc:  # the rows disagree with what their upload reported: never a 500
            raise SpecError("data.target", f"column '{target}': {exc}") from None
    split, seed, method = _split(spec, source.info.rows, labels)
    warnings = []
    if labels is not None:
        warnings = _missing_classes(classes, labels[split.train], labels[split.validation])
    text = [c.name for c in info.columns if c.type == "text" and c.name != target]
    if data.features is None and text:
        warnings.append(
            f"free-text columns left out of the features: {', '.join(text[:_SHOWN])} (more than "
            "1000 distinct values each)"
        )
    split_info = _split_info(spec, method, split, seed, classes is not None)
    if validation is not None:  # every row of the other data set validates
        split_info = split_info.model_copy(update={"validation_rows": validation.info.rows})
    plan = DataPlan(
        source="dataset",
        dataset=source.ref,
        builtin=source.builtin,
        validation_dataset=validation.ref if validation else None,
        target=target,
        features=features,
        classes=classes,
        split=split_info,
        preprocessing=options,
        warnings=warnings,
    )
    width = sum(1 if f.type == "numeric" else _categories(info, f.name) + 1 for f in features)
    shape = DataShape(
        rows=info.rows,
        features=width,
        outputs=output_units(task, classes),
        classes=len(classes or ()),
        field="data.features",
        classes_field="data.target",
    )
    problems = check_limits(spec, limits, shape)
    if problems:
        raise problems[0]
    return PreparedDataset(plan, shape)


def _default_target(source: DatasetSource) -> str:
    if source.builtin:
        return "target"
    if source.info.format == "npz":
        return "y"
    raise SpecError(
        "data.target",
        f"give the label column of data set '{source.ref}' as data.target: one of "
        f"{_names(source.info.columns)}",
    )


def _names(columns: list[ColumnInfo]) -> str:
    shown = [c.name for c in columns[:_SHOWN]]
    return str(shown)[:-1] + (f", ... ({len(columns)} columns)]" if len(columns) > _SHOWN else "]")


def _features(requested: list[str] | None, target: str, info: DatasetInfo) -> list[FeatureInfo]:
    if requested is None:
        chosen = [c for c in info.columns if c.name != target and c.type != "text"]
        if not chosen:
            raise SpecError(
                "data.features", f"besides the target '{target}' the data set has no usable column"
            )
        return [FeatureInfo(name=c.name, type=c.type) for c in chosen]
    unknown = [name for name in requested if info.column(name) is None]
    if unknown:
        raise SpecError(
            "data.features",
            f"no column {', '.join(repr(n) for n in unknown[:_SHOWN])} in the data set: choose from "
            f"{_names(info.columns)}",
        )
    if target in requested:
        raise SpecError("data.features", f"'{target}' is the target; it cannot be a feature too")
    features = []
    for name in requested:
        column = info.column(name)
        assert column is not None
        if column.type == "text":
            raise SpecError(
                "data.features",
                f"column '{name}' is free text (more than 1000 distinct values): models here take numeric "
                "and categorical columns; leave it out",
            )
        features.append(FeatureInfo(name=name, type=column.type))
    return features


def _check_missing(info: DatasetInfo, columns: list[ColumnInfo], field: str, impute: str | None) -> None:
    for column in columns:
        if column.missing == 0 or (impute is not None and field == "data.features"):
            continue
        first = column.first_missing_row
        where = f", the first in data row {first + 1}" if first is not None else ""
        fix = (
            "remove those rows or choose another target"
            if field == "data.target"
            else "fill them, leave the column out of data.features, or set data.preprocessing.impute to "
            "'mean'"
        )
        raise SpecError(
            field, f"column '{column.name}' has {column.missing} missing (empty or NaN) cells{where}: {fix}"
        )


def _check_finite(columns: list[ColumnInfo], field: str) -> None:
    for column in columns:
        if column.type == "numeric" and not all(
            v is None or math.isfinite(v) for v in (column.min, column.max)
        ):
            raise SpecError(
                field,
                f"column '{column.name}' holds infinite values (from {column.min} to {column.max}): replace "
                "them, or leave the column out",
            )


def _classes(task: Task, target: ColumnInfo, max_classes: int) -> list[Label] | None:
    if task is Task.REGRESSION:
        if target.type != "numeric":
            raise SpecError(
                "data.target",
                f"regression needs a numeric target; column '{target.name}' holds text: use "
                "binary_classification or multiclass_classification, or another column",
            )
        return None
    if target.values is None:
        raise SpecError(
            "data.target",
            f"column '{target.name}' has more than 1000 distinct values; a classifier's target has classes: "
            "is this a regression target?",
        )
    try:
        labels = as_labels(np.asarray(target.values, dtype=object))
    except LabelError as exc:
        raise SpecError("data.target", f"column '{target.name}': {exc}") from None
    classes = classes_of(labels)
    problem = check_classes(task, classes, max_classes)
    if problem is not None:
        raise SpecError("data.target", f"column '{target.name}': {problem}")
    return classes


def _categories(info: DatasetInfo, name: str) -> int:
    column = info.column(name)
    return column.distinct or 0 if column is not None else 0


def _check_validation_dataset(
    validation: DatasetSource,
    features: list[FeatureInfo],
    target: str,
    task: Task,
    classes: list[Label] | None,
    impute: str | None,
    field: str = "data.validation_dataset",
    of: str = "training data set",
) -> None:
    info = validation.info
    missing = [f.name for f in features if info.column(f.name) is None]
    if info.column(target) is None:
        missing.append(target)
    if missing:
        raise SpecError(
            field,
            f"data set '{validation.ref}' lacks column {', '.join(repr(n) for n in missing[:_SHOWN])} of the "
            f"{of}",
        )
    for feature in features:
        column = info.column(feature.name)
        assert column is not None
        if column.type != feature.type and not (feature.type == "categorical" and column.type == "text"):
            raise SpecError(
                field,
                f"column '{feature.name}' is {column.type} in data set '{validation.ref}' but {feature.type} "
                f"in the {of}",
            )
    target_column = info.column(target)
    assert target_column is not None
    _check_missing(info, [target_column], field, impute=None)
    used = [column for f in features if (column := info.column(f.name)) is not None]
    _check_missing(info, used, field, impute)
    _check_finite(used, field)
    if classes is not None:
        own = _classes(task, target_column, max_classes=2**31)
        unknown = [c for c in own or () if c not in classes]
        if unknown:
            raise SpecError(field, f"its target has classes the {of} lacks: {unknown[:_SHOWN]}")
    elif target_column.type != "numeric":
        raise SpecError(field, f"column '{target}' is not numeric there")


def check_test_dataset(test: DatasetSource, plan: DataPlan, task: Task) -> None:
    """Check a test data set (POST /v1/jobs/{id}/finalize) against the data set the job trained on: its
    feature and target columns, their types, no missing cells, only known classes. Raises SpecError naming
    `test_dataset`."""
    if plan.target is None:
        raise SpecError(
            "test_dataset", "the job trained on inline arrays: give its test set inline, as `test`"
        )
    features, target, classes = plan.features, plan.target, plan.classes
    _check_validation_dataset(test, features, target, task, classes, None, "test_dataset", "job's data set")


def _split(spec: JobCreate, rows: int, labels: np.ndarray | None) -> tuple[Split, int | None, str]:
    """The split of a data set's rows; a classifier's (`labels`: each row's class) is stratified."""
    data = spec.data
    if data.validation_dataset is not None:
        return Split(np.arange(rows), np.empty(0, np.int64)), None, "validation_dataset"
    seed = split_seed(spec) if data.shuffle else None
    split = split_rows(rows, data.effective_split, seed or 0, data.shuffle, labels if data.shuffle else None)
    if len(split.validation) == 0 or len(split.train) == 0:
        raise SpecError(
            "data.validation_split",
            f"validation_split {data.effective_split} of {rows} rows leaves no row to "
            f"{'validate' if len(split.validation) == 0 else 'train'} on: use another split, more rows, or "
            "a validation_dataset",
        )
    return split, seed, "validation_split"


def dataset_labels(table: pa.Table, target: str, classes: list[Label]) -> np.ndarray:
    """Each row's class index in a data set's target column."""
    return column_indices(table.column(target), classes)
