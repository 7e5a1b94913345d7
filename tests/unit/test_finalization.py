"""A finalization's request, its test set checked against the job, and its state at a given time
(`service.core.finalization`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from service.core.data_plan import FeatureInfo
from service.core.errors import InvalidRequest
from service.core.finalization import (
    Finalization,
    FinalizationStatus,
    FinalizeRequest,
    HeldOutSet,
    check_test_set,
)
from service.core.job_runs import current, current_text

FEATURES = [FeatureInfo(name="x0", type="numeric"), FeatureInfo(name="x1", type="numeric")]
CLASSES: list[int | str] = ["no", "yes"]
NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)


def fields(exc: InvalidRequest) -> list[str]:
    return [p.field for p in exc.fields]


def test_an_empty_body_is_no_test_set() -> None:
    assert FinalizeRequest.model_validate({}).test is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tset": {}}, ("tset",)),
        ({"test": {"x": [], "y": []}}, ("test", "x")),
        ({"test": {"x": [[0, 1]]}}, ("test", "y")),
        ({"test": {"x": [[0, 1]], "y": [1], "w": [1]}}, ("test", "w")),
        ({"test_dataset": ""}, ("test_dataset",)),
    ],
)
def test_a_malformed_request_names_the_field(body: dict[str, object], field: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as raised:
        FinalizeRequest.model_validate(body)
    assert field in [error["loc"] for error in raised.value.errors()]


def test_a_test_set_is_checked_into_rows_and_class_indices() -> None:
    checked = check_test_set(HeldOutSet(x=[[0, 1], {"x1": 0, "x0": 1}], y=["yes", "no"]), FEATURES, CLASSES)
    assert checked.rows == [[0.0, 1.0], [1.0, 0.0]]
    assert checked.targets == [1.0, 0.0]


def test_regression_targets_are_numbers() -> None:
    assert check_test_set(HeldOutSet(x=[[0, 1]], y=[2.5]), FEATURES, None).targets == [2.5]
    with pytest.raises(InvalidRequest) as raised:
        check_test_set(HeldOutSet(x=[[0, 1], [1, 1]], y=[2.5, "a"]), FEATURES, None)
    assert fields(raised.value) == ["test.y[1]"]


def test_a_row_with_the_wrong_feature_count_names_the_row() -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_test_set(HeldOutSet(x=[[0, 1], [0, 1, 1]], y=["no", "yes"]), FEATURES, CLASSES)
    assert fields(raised.value) == ["test.x[1]"]
    assert "2 features" in raised.value.fields[0].message


def test_unknown_labels_and_missing_targets_name_test_y() -> None:
    with pytest.raises(InvalidRequest) as raised:
        check_test_set(HeldOutSet(x=[[0, 1]], y=["maybe"]), FEATURES, CLASSES)
    assert fields(raised.value) == ["test.y"]
    with pytest.raises(InvalidRequest) as raised:
        check_test_set(HeldOutSet(x=[[0, 1], [1, 1]], y=["no"]), FEATURES, CLASSES)
    assert fields(raised.value) == ["test.y"]


def queued(deadline: datetime) -> Finalization:
    return Finalization(run_id="r1", status=FinalizationStatus.QUEUED, requested_at=NOW, deadline_at=deadline)


def test_a_finalization_past_its_deadline_has_failed_with_worker_lost() -> None:
    record = queued(NOW + timedelta(minutes=5))
    assert current(record, NOW) is record
    lost = current(record, NOW + timedelta(minutes=6))
    assert lost.status is FinalizationStatus.FAILED
    assert lost.error is not None and lost.error.code == "worker_lost"
    assert "KTUNE_FINALIZE_TIMEOUT_SECONDS" in lost.error.message and "finalize again" in lost.error.message
    ended = record.model_copy(update={"status": FinalizationStatus.SUCCEEDED})
    assert current(ended, NOW + timedelta(days=1)) is ended


def test_the_stored_text_changes_only_when_the_state_does() -> None:
    text = queued(NOW + timedelta(minutes=5)).model_dump_json()
    assert current_text(text, NOW, Finalization) is text
    later = Finalization.model_validate_json(current_text(text, NOW + timedelta(minutes=6), Finalization))
    assert later.status is FinalizationStatus.FAILED
