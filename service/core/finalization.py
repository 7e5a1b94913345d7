"""Finalization of a job (POST /v1/jobs/{id}/finalize): the request, its checked test set, and the record of
the run as the job shows it (`finalization` on GET /v1/jobs/{id}).

Pure (no TensorFlow, no Redis): the API checks the test set before a worker sees it. A worker retrains the
best trial's hyperparameters on the training and validation rows (`worker.finalization`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from service.core.catalog import Label
from service.core.data_plan import FeatureInfo
from service.core.errors import FieldProblem, InvalidRequest
from service.core.job_runs import JobRun, RunError, RunStatus
from service.core.lazy_imports import needed_for
from service.core.params import StrictModel
from service.core.predictions import Cell, check_rows

MAX_TEST_ROWS = 100_000
"""Rows a test set may have (the request body's size limit may be lower)."""


# A finalization's states and errors are every job run's (`service.core.job_runs`).
FinalizationStatus = RunStatus
FinalizationError = RunError


class Finalization(JobRun):
    """A job's latest finalization: the best hyperparameters retrained on training + validation rows."""

    noun: ClassVar[str] = "finalization"
    verb: ClassVar[str] = "finalize"
    timeout_setting: ClassVar[str] = "KTUNE_FINALIZE_TIMEOUT_SECONDS"

    epochs: int | None = Field(None, description="epochs trained: the best trial's best epoch + 1")
    test_rows: int = Field(0, description="rows of the test set; 0: no test evaluation")
    train_metrics: dict[str, float] | None = Field(
        None, description="the final model's metrics on the rows it was trained on"
    )
    test_metrics: dict[str, float] | None = Field(None, description="its metrics on the test set")


class HeldOutSet(StrictModel):
    """Held-out rows the final model is evaluated on, like a job's inline data."""

    x: list[Any] = Field(
        min_length=1,
        max_length=MAX_TEST_ROWS,
        description="one list per row in the order of the job's `data.features` (or one object per row "
        "keyed by feature name), as for predict",
    )
    y: list[Any] = Field(
        min_length=1,
        max_length=MAX_TEST_ROWS,
        description="one target per row: a class label of the job (classifiers) or a number",
    )


class FinalizeRequest(StrictModel):
    """What to finalize with; an empty body is no test evaluation."""

    test: HeldOutSet | None = Field(None, description="a held-out test set the final model is evaluated on")
    test_dataset: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="instead of `test`: a data set (an upload's id or a built-in name) with the columns of "
        "the data set the job trained on; every row is a test row",
    )


@dataclass(frozen=True)
class CheckedTestSet:
    """A test set as the worker takes it: rows of cells in feature order, targets as class indices or
    values."""

    rows: list[list[Cell]]
    targets: list[float]


def check_test_set(
    test: HeldOutSet, features: list[FeatureInfo], classes: list[Label] | None
) -> CheckedTestSet:
    """The test set checked against the job's features and classes. Raises InvalidRequest naming `test.x`,
    `test.x[i]` or `test.y`."""
    try:
        rows = check_rows(test.x, features, MAX_TEST_ROWS)
    except InvalidRequest as exc:
        raise InvalidRequest([_under_test_x(p) for p in exc.fields]) from None
    if len(test.y) != len(test.x):
        raise InvalidRequest(
            [
                FieldProblem(
                    "test.y", f"has {len(test.y)} targets for {len(test.x)} rows of test.x: give one a row"
                )
            ]
        )
    return CheckedTestSet(rows, _targets(test.y, classes))


def _under_test_x(problem: FieldProblem) -> FieldProblem:
    return FieldProblem("test.x" + problem.field.removeprefix("rows"), problem.message)


def _targets(y: list[Any], classes: list[Label] | None) -> list[float]:
    if classes is not None:
        with needed_for("check a test set's labels"):
            from service.core.labels import LabelError, as_labels, to_indices
        try:
            return [float(i) for i in to_indices(as_labels(y), classes).tolist()]
        except LabelError as exc:
            raise InvalidRequest([FieldProblem("test.y", str(exc))]) from None
    for index, value in enumerate(y):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            problem = FieldProblem(f"test.y[{index}]", "give a finite number (a regression target)")
            raise InvalidRequest([problem])
    return [float(v) for v in y]
