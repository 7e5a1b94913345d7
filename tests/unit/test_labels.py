"""Class labels: mapping targets to classes, and the rules on them."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.catalog import Task, output_units
from service.core.labels import LabelError, as_labels, check_classes, classes_of, to_indices


def test_labels_one_to_three_make_three_classes_not_four() -> None:
    labels = as_labels([1.0, 2.0, 3.0, 2.0])
    classes = classes_of(labels)
    assert classes == [1, 2, 3]
    assert to_indices(labels, classes).tolist() == [0, 1, 2, 1]
    assert output_units(Task.MULTICLASS_CLASSIFICATION, classes) == 3


def test_minus_one_and_one_are_a_binary_task() -> None:
    classes = classes_of(as_labels([-1, 1, 1, -1]))
    assert classes == [-1, 1]
    assert check_classes(Task.BINARY_CLASSIFICATION, classes, 1000) is None


def test_string_labels_sort_as_text() -> None:
    labels = as_labels(["virginica", "setosa", "versicolor", "setosa"])
    classes = classes_of(labels)
    assert classes == ["setosa", "versicolor", "virginica"]
    assert to_indices(labels, classes).tolist() == [2, 0, 1, 0]


def test_many_bad_labels_are_one_error_that_counts_and_shows_the_first() -> None:
    values = [0.5 + i for i in range(455)]
    with pytest.raises(LabelError) as caught:
        as_labels(values)
    message = str(caught.value)
    assert message.startswith("455 labels are not whole numbers")
    assert "row 0 (0.5)" in message and "and 450 more" in message
    assert len(message) < 400


def test_strings_mixed_with_numbers_are_refused() -> None:
    with pytest.raises(LabelError, match="1 labels are not strings like the rest"):
        as_labels(["a", "b", 3])


def test_binary_with_three_classes_names_the_count() -> None:
    problem = check_classes(Task.BINARY_CLASSIFICATION, [0, 1, 2], 1000)
    assert problem is not None and "exactly 2 classes, the target has 3" in problem


def test_a_single_class_is_refused() -> None:
    problem = check_classes(Task.MULTICLASS_CLASSIFICATION, ["a"], 1000)
    assert problem is not None and "single class" in problem


def test_labels_outside_the_classes_are_refused() -> None:
    with pytest.raises(LabelError, match="1 labels are not among the classes"):
        to_indices(np.array(["a", "z"]), ["a", "b"])


def test_long_strings_are_not_cut_when_mapped() -> None:
    labels = np.array(["a", "b"])
    assert to_indices(labels, ["a", "b"]).tolist() == [0, 1]
    assert to_indices(np.array(["long-label", "b"]), ["b", "long-label"]).tolist() == [1, 0]


def test_a_label_column_maps_to_indices_and_refuses_unknown_labels() -> None:
    import pyarrow as pa

    from service.core.labels import column_indices

    assert column_indices(pa.chunked_array([["b", "a", "b"]]), ["a", "b"]).tolist() == [1, 0, 1]
    assert column_indices(pa.chunked_array([[3.0, 1.0]]), [1, 3]).tolist() == [1, 0]
    with pytest.raises(LabelError, match="1 labels are not among the classes: row 1 \\('c'\\)"):
        column_indices(pa.chunked_array([["a", "c"]]), ["a", "b"])
