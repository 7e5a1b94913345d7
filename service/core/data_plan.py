"""What a job trains on: where its rows come from, its features, classes, split and preprocessing.

The API writes a job's plan when it accepts the job (and shows it as the job's `data`); workers rebuild the
job's arrays from it, so every worker trains on the same rows, split the same way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.core.catalog import Label
from service.core.spec import PreprocessingSpec

FeatureType = Literal["numeric", "categorical"]


class FeatureInfo(BaseModel):
    """One input column of the model, named as in the data set's header (inline arrays: x0, x1, ...)."""

    name: str
    type: FeatureType


class SplitInfo(BaseModel):
    """How the rows were divided into training and validation, with a checksum of the row lists."""

    method: Literal["validation_split", "validation", "validation_dataset"]
    fraction: float | None = Field(None, description="validation_split: the fraction held out")
    shuffle: bool = Field(description="split at random (seeded) rather than holding out the last rows")
    stratified: bool = Field(description="the same fraction of every class held out")
    seed: int | None = Field(None, description="the seed of a shuffled split (tuner.seed, or drawn)")
    train_rows: int
    validation_rows: int
    checksum: str = Field(description="sha256 of the training and validation row indices")


class DataPlan(BaseModel):
    """A job's data as it is trained on."""

    source: Literal["inline", "dataset"]
    dataset: str | None = Field(None, description="the data set's id, or a built-in set's name")
    builtin: bool = False
    validation_dataset: str | None = None
    target: str | None = Field(None, description="the label column of a data set")
    features: list[FeatureInfo]
    classes: list[Label] | None = Field(
        None,
        description="classifiers: output unit i (binary: probability > 0.5 means classes[1]) is classes[i]",
    )
    split: SplitInfo
    preprocessing: PreprocessingSpec | None = Field(
        None, description="what the model does to raw rows (resolved: scale_target only where it applies)"
    )
    warnings: list[str] = Field(default_factory=list)
