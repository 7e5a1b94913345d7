"""Train/validation splits of a job's rows: seeded, shuffled, stratified by class for classifiers.

The API computes a job's split when it accepts the job and records its counts and checksum; every worker
computes it again from the same rows and seed, and refuses to train on a split with another checksum.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """Row indices (into the data set, ascending) of each side of a split."""

    train: np.ndarray
    validation: np.ndarray

    @property
    def checksum(self) -> str:
        return rows_checksum(self.train, self.validation)


def rows_checksum(train: np.ndarray, validation: np.ndarray) -> str:
    """sha256 of the two row lists, so a job's split can be checked and reproduced."""
    digest = hashlib.sha256()
    for rows in (train, validation):
        digest.update(np.ascontiguousarray(rows, dtype="<i8").tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def split_rows(
    rows: int, fraction: float, seed: int, shuffle: bool = True, classes: np.ndarray | None = None
) -> Split:
    """Hold out `fraction` of `rows` for validation.

    Without shuffling: the last rows, as Keras' validation_split takes them. Shuffled: a seeded random
    choice; with `classes` (each row's class index) the same fraction of every class, so the validation
    rows have the classes of the training rows (a class of one row stays in training).
    """
    if not shuffle:
        cut = math.ceil(rows * (1 - fraction))
        return Split(np.arange(cut, dtype=np.int64), np.arange(cut, rows, dtype=np.int64))
    generator = np.random.default_rng(seed)
    if classes is None:
        order = generator.permutation(rows)
        held = rows - math.ceil(rows * (1 - fraction))
        return _sides(rows, order[:held])
    held_out = []
    for label in np.unique(classes):
        members = np.flatnonzero(classes == label)
        count = len(members) - math.ceil(len(members) * (1 - fraction))
        if count == 0 and len(members) > 1:
            count = 1  # every class with two rows or more is validated too
        held_out.append(generator.permutation(members)[:count])
    return _sides(rows, np.concatenate(held_out) if held_out else np.empty(0, np.int64))


def _sides(rows: int, held_out: np.ndarray) -> Split:
    mask = np.zeros(rows, dtype=bool)
    mask[held_out] = True
    return Split(np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64))
