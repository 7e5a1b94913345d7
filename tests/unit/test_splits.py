"""Train/validation splits: Keras' rule without shuffling, seeded and stratified with it."""

from __future__ import annotations

import numpy as np

from service.core.splits import split_rows


def test_without_shuffling_the_last_rows_validate_as_keras_takes_them() -> None:
    split = split_rows(10, 0.2, seed=1, shuffle=False)
    assert split.train.tolist() == list(range(8))
    assert split.validation.tolist() == [8, 9]


def test_a_seeded_split_is_the_same_every_time_and_differs_by_seed() -> None:
    first, again = split_rows(100, 0.2, seed=7), split_rows(100, 0.2, seed=7)
    other = split_rows(100, 0.2, seed=8)
    assert first.checksum == again.checksum
    assert first.checksum != other.checksum
    assert len(first.validation) == 20 and len(first.train) == 80
    assert sorted([*first.train, *first.validation]) == list(range(100))


def test_rows_sorted_by_class_still_validate_every_class() -> None:
    classes = np.repeat([0, 1, 2], 50)  # iris in its file order
    keras_rule = split_rows(150, 0.2, seed=0, shuffle=False)
    assert set(classes[keras_rule.validation]) == {2}
    split = split_rows(150, 0.2, seed=0, classes=classes)
    assert [int((classes[split.validation] == c).sum()) for c in range(3)] == [10, 10, 10]


def test_a_class_of_one_row_stays_in_training_and_small_classes_are_validated() -> None:
    classes = np.array([0] * 20 + [1] * 2 + [2])
    split = split_rows(len(classes), 0.2, seed=3, classes=classes)
    assert 22 in split.train
    assert set(classes[split.validation]) == {0, 1}
