"""The tuning-job request: what to train, the search space, the objective and the search algorithm.

Structural and semantic rules live on the models (no settings needed); `check_limits` applies the
configurable hard limits. Both raise errors that name the offending field. `JobSpec` is a job without its
data (what is stored as the job's spec, and what workers load); `JobCreate` adds the inline data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from service.core.catalog import (
    ACTIVATIONS,
    OPTIMIZERS,
    TASK_RULES,
    Direction,
    Label,
    Task,
    computed_metrics,
    metric_direction,
    output_units,
)
from service.core.enqueue import EnqueueError, enqueued_values
from service.core.errors import shorten
from service.core.lazy_imports import needed_for
from service.core.params import (
    Float,
    FloatChoice,
    FloatParam,
    Int,
    IntChoice,
    IntParam,
    IntRange,
    NameChoice,
    NameParam,
    StrictModel,
    bounds,
    grid_values,
    names,
    value_count,
)
from service.core.pruning_spec import PruningSpec, pruning_problem
from service.core.settings import Limits
from service.core.stop_when import StopWhen
from service.core.warm_start_spec import NO_WARM_START, WarmStart
from service.core.webhooks import CallbackRefused, check_scheme


class SpecError(ValueError):
    """A rule of the request was broken; `field` is the dotted path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ArrayData(StrictModel):
    """Inline arrays: x is rows of numeric features, y one target per row (a class label may be a string)."""

    x: list[list[float]] = Field(min_length=1, description="2-D: one list of numbers per row")
    y: list[float | str] = Field(
        min_length=1, description="1-D: one target per row; numbers, or strings as class labels"
    )

    @model_validator(mode="after")
    def _shape(self) -> Self:
        width = len(self.x[0])
        if width == 0:
            raise ValueError("x rows must have at least one feature")
        for index, row in enumerate(self.x):
            if len(row) != width:
                raise ValueError(
                    f"x must be rectangular: row {index} has {len(row)} values, row 0 has {width}"
                )
            if not all(math.isfinite(v) for v in row):
                raise ValueError(f"x row {index} holds NaN or infinity; only finite numbers are allowed")
        if len(self.y) != len(self.x):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)} values; give one y per row")
        if not all(isinstance(v, str) or math.isfinite(v) for v in self.y):
            raise ValueError("y holds NaN or infinity; only finite numbers are allowed")
        return self


class PreprocessingSpec(StrictModel):
    """What the model does to raw rows before its hidden layers; all of it is part of the saved model."""

    standardize: bool = Field(
        True, description="numeric features scaled to mean 0, variance 1 by the training rows' statistics"
    )
    impute: Literal["mean"] | None = Field(
        None,
        description="'mean': missing numeric cells take the training rows' mean and missing categorical "
        "cells a category of their own; unset: a missing cell in a used column is refused",
    )
    scale_target: bool = Field(
        True,
        description="regression with a linear output: train on standardized targets; the model still "
        "predicts in the target's units",
    )


class DataSpec(StrictModel):
    """Training data: inline arrays (`train`), or a data set by id or built-in name (`dataset`)."""

    train: ArrayData | None = Field(None, description="inline rows")
    validation: ArrayData | None = Field(None, description="inline validation rows")
    dataset: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="a data set's id (POST /v1/datasets) or a built-in name (iris, wine, breast_cancer, "
        "digits, diabetes)",
    )
    target: str | None = Field(
        None, min_length=1, description="the label column; built-in sets: 'target', .npz files: 'y'"
    )
    features: list[str] | None = Field(
        None, min_length=1, description="feature columns in this order; default: every other column"
    )
    validation_dataset: str | None = Field(
        None, min_length=1, max_length=100, description="validate on this data set instead of a split"
    )
    validation_split: Float | None = Field(
        None, gt=0, lt=1, description="fraction of the rows held out for validation (default 0.2)"
    )
    shuffle: bool = Field(
        True,
        description="split at random (seeded by tuner.seed; stratified by class for classifiers); false "
        "holds out the last rows, as Keras' validation_split does",
    )
    preprocessing: bool | PreprocessingSpec | None = Field(
        None,
        description="on (true, or the options) by default for data sets, off for inline arrays",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.train is None) == (self.dataset is None):
            raise ValueError("give either train (inline arrays) or dataset (a data set's id or name)")
        if self.train is not None:
            given = [n for n in ("target", "features", "validation_dataset") if getattr(self, n) is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} go with dataset; inline data gives its features as x and its "
                    "targets as y"
                )
        elif self.validation is not None:
            raise ValueError("validation holds inline arrays; with dataset, use validation_dataset")
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat")
        held_out = [n for n in ("validation", "validation_dataset") if getattr(self, n) is not None]
        if held_out and self.validation_split is not None:
            raise ValueError(f"give either {held_out[0]} or validation_split, not both")
        if self.validation is not None and self.train is not None:
            if len(self.validation.x[0]) != len(self.train.x[0]):
                raise ValueError(
                    f"validation.x has {len(self.validation.x[0])} features but train.x has "
                    f"{len(self.train.x[0])}"
                )
        elif self.train is not None:
            rows = len(self.train.x)
            held = rows - math.ceil(rows * (1 - self.effective_split))
            if held < 1 or held >= rows:
                raise ValueError(
                    f"validation_split {self.effective_split} of {rows} train rows leaves no row to "
                    "validate or to train on; send a validation set or more rows"
                )
        return self

    @property
    def effective_split(self) -> float:
        """The validation split in force: the given one, or 0.2 when no validation set is sent."""
        return self.validation_split if self.validation_split is not None else 0.2

    @property
    def has_validation_set(self) -> bool:
        return self.validation is not None or self.validation_dataset is not None

    def preprocessing_options(self) -> PreprocessingSpec | None:
        """The preprocessing in force: on by default for data sets, off for inline arrays."""
        given = self.preprocessing
        if given is None:
            given = self.dataset is not None
        if given is True:
            return PreprocessingSpec()
        return given or None

    @property
    def rows(self) -> int:
        """Inline rows, train and validation together (0 for a data set)."""
        if self.train is None:
            return 0
        return len(self.train.x) + (len(self.validation.x) if self.validation else 0)

    @property
    def inline_features(self) -> int:
        """Columns of inline x (0 for a data set)."""
        return len(self.train.x[0]) if self.train is not None else 0


class ModelSpec(StrictModel):
    """An mlp: dense hidden layers, each with its own units hyperparameter (units_0, units_1, ...)."""

    architecture: Literal["mlp"] = "mlp"
    hidden_layers: IntParam = 2
    units: IntParam = 32
    activation: NameParam = "relu"
    dropout: FloatParam = 0.0
    output_activation: str | None = Field(None, description="defaults to the task's")

    @model_validator(mode="after")
    def _ranges(self) -> Self:
        if bounds(self.hidden_layers)[0] < 1:
            raise SpecError("model.hidden_layers", "must be at least 1")
        if bounds(self.units)[0] < 1:
            raise SpecError("model.units", "must be at least 1")
        low, high = bounds(self.dropout)
        if low < 0 or high >= 1:
            raise SpecError("model.dropout", f"must be in [0, 1), got {low}..{high}")
        for name in names(self.activation):
            if name not in ACTIVATIONS:
                raise SpecError(
                    "model.activation", f"'{shorten(name)}' is not supported: choose from {list(ACTIVATIONS)}"
                )
        return self


class OptimizerSpec(StrictModel):
    """The optimizer and its learning rate."""

    name: NameParam = "adam"
    learning_rate: FloatParam = 0.001

    @model_validator(mode="after")
    def _known(self) -> Self:
        for name in names(self.name):
            if name not in OPTIMIZERS:
                raise SpecError(
                    "optimizer.name", f"'{shorten(name)}' is not supported: choose from {list(OPTIMIZERS)}"
                )
        if bounds(self.learning_rate)[0] <= 0:
            raise SpecError("optimizer.learning_rate", "must be greater than 0")
        return self


class EarlyStopping(StrictModel):
    """Stop an execution when the objective has not improved for `patience` epochs."""

    patience: Int = Field(ge=1)
    min_delta: Float = Field(0.0, ge=0)


class TrainingSpec(StrictModel):
    """How each execution trains."""

    epochs: Int = Field(10, ge=1)
    batch_size: IntParam = 32
    loss: str | None = Field(None, description="defaults to the task's")
    metrics: list[str] | None = Field(None, description="defaults to the task's")
    early_stopping: EarlyStopping | None = None

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("metrics must not repeat")
        return value

    @model_validator(mode="after")
    def _batch(self) -> Self:
        if bounds(self.batch_size)[0] < 1:
            raise SpecError("training.batch_size", "must be at least 1")
        return self


class ObjectiveSpec(StrictModel):
    """The metric the search optimises, and whether lower or higher is better; how ties are broken."""

    name: str
    direction: Direction | None = Field(None, description="inferred from the name when left out")
    tie_breaker: str | None = Field(
        "val_loss",
        description="between trials with equal objective values, the better value of this metric wins "
        "(its direction inferred from its name; null: none); ignored when it is the objective itself",
    )
    prefer_fewer_epochs: bool = Field(
        False,
        description="between trials still tied after tie_breaker, the one that reached its best epoch in "
        "fewer epochs wins (else the first to complete)",
    )


# The algorithms that are Optuna's samplers (worker/optuna_search.py); the rest are keras-tuner's oracles.
OPTUNA_ALGORITHMS = frozenset({"tpe", "cmaes"})


class TunerSpec(StrictModel):
    """The search algorithm (keras-tuner's oracles, Optuna's TPE and CMA-ES samplers) and its budget."""

    algorithm: Literal["random", "grid", "bayesian", "hyperband", "tpe", "cmaes"] = Field(
        "random",
        description="keras-tuner's random, grid, bayesian or hyperband; Optuna's tpe, or cmaes (numeric "
        "hyperparameters only)",
    )
    max_trials: Int = Field(10, ge=1)
    executions_per_trial: Int = Field(1, ge=1)
    max_parallel_trials: Int = Field(
        4, ge=1, description="trials of this job running at once, on whichever workers serve its queue"
    )
    seed: Int | None = Field(None, ge=0, lt=2**31)
    max_epochs: Int | None = Field(None, ge=1, description="hyperband only; defaults to training.epochs")
    factor: Int = Field(3, ge=2, description="hyperband only")
    hyperband_iterations: Int = Field(1, ge=1, description="hyperband only")
    num_initial_points: Int | None = Field(
        None,
        ge=1,
        description="bayesian only: random trials before the Gaussian process suggests the next ones; "
        "default max(3, min(3 x tuned hyperparameters, max_trials // 4)), each layer's units counting as one",
    )

    pruning: PruningSpec | None = Field(
        None, description="stop trials that cannot win while they train (not with hyperband); see the README"
    )
    stop_when: StopWhen | None = Field(
        None, description="end the search before max_trials (completion criteria); see the README"
    )
    enqueue: list[dict[str, Any]] | None = Field(
        None,
        description="hyperparameter values to try first, in order, each as one of the max_trials trials; "
        "names left out are drawn by the search (see the README)",
    )
    warm_start: WarmStart | None = Field(
        None,
        description="seed the search with the completed trials of up to 5 finished jobs (not with hyperband "
        "or grid); see the README",
    )

    @model_validator(mode="after")
    def _bayesian_only(self) -> Self:
        if self.num_initial_points is not None and self.algorithm != "bayesian":
            raise SpecError(
                "tuner.num_initial_points",
                f"applies to bayesian search only, not {self.algorithm}: leave it out, or set "
                "tuner.algorithm to bayesian",
            )
        if self.warm_start is not None and self.algorithm in NO_WARM_START:
            raise SpecError(
                "tuner.warm_start",
                f"{self.algorithm} search does not take earlier results in: leave warm_start out, or use "
                "random, bayesian, tpe or cmaes",
            )
        return self


class ResourcesSpec(StrictModel):
    """Where the job's trials run: Celery queue `cpu` or `gpu` (`any` uses the cpu queue)."""

    accelerator: Literal["cpu", "gpu", "any"] = "any"


class JobLimits(StrictModel):
    """When a job gives up on a trial or on the search (Katib's maxFailedTrialCount, SageMaker's
    MaxRuntimeInSeconds)."""

    max_failed_trials: Int | None = Field(
        None,
        ge=0,
        description="fail the job once more trials than this failed; unset: keras-tuner's "
        "rule, which fails it after 3 failed trials in a row",
    )
    trial_timeout_seconds: Float | None = Field(
        None, gt=0, description="a trial still training after this long is stopped and failed (trial_timeout)"
    )
    max_runtime_seconds: Float | None = Field(
        None,
        gt=0,
        description="after this long no trial starts and running ones stop; the job ends with what it found",
    )


class JobSpec(StrictModel):
    """A tuning job without its data: what is stored as the job's spec, and what workers load.

    Every rule that needs no data lives here; `JobCreate` adds the data and the rules on it.
    """

    name: str | None = Field(None, max_length=200)
    task: Task
    model: ModelSpec = Field(default_factory=ModelSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    objective: ObjectiveSpec | None = Field(None, description="defaults to the task's")
    tuner: TunerSpec = Field(default_factory=TunerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    limits: JobLimits = Field(default_factory=JobLimits)
    callback_url: str | None = Field(
        None,
        max_length=2048,
        description="an http(s) URL that gets a signed POST of the job (as GET /v1/jobs/{id} returns it) "
        "when the job ends; see the README's Webhooks",
    )

    @field_validator("callback_url")
    @classmethod
    def _callback_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_scheme(value)
            except CallbackRefused as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        rules = TASK_RULES[self.task]
        task = self.task.value
        if (
            self.model.output_activation is not None
            and self.model.output_activation not in rules.output_activations
        ):
            raise SpecError(
                "model.output_activation",
                f"'{shorten(self.model.output_activation)}' does not fit task {task}: choose from "
                f"{list(rules.output_activations)}",
            )
        if self.training.loss is not None and self.training.loss not in rules.losses:
            raise SpecError(
                "training.loss",
                f"'{shorten(self.training.loss)}' does not fit task {task}: choose from {list(rules.losses)}",
            )
        for metric in self.training.metrics or ():
            if metric not in rules.allowed_metrics:
                raise SpecError(
                    "training.metrics",
                    f"'{shorten(metric)}' does not fit task {task}: choose from "
                    f"{list(rules.allowed_metrics)}",
                )
        self._check_targets()
        tuner = self.tuner
        if problem := pruning_problem(tuner.pruning, tuner.algorithm, self.training.epochs, tuner.max_trials):
            raise SpecError(*problem)
        self._check_numeric_for_cmaes()
        valid = self.computed_metrics
        if self.objective is not None and self.objective.name not in valid:
            raise SpecError(
                "objective.name",
                f"objective '{shorten(self.objective.name)}' is not a metric this job computes: "
                f"choose one of {valid}",
            )
        tie_breaker = self.objective.tie_breaker if self.objective is not None else None
        if tie_breaker is not None and tie_breaker not in valid:
            raise SpecError(
                "objective.tie_breaker",
                f"'{shorten(tie_breaker)}' is not a metric this job computes: choose one of {valid}, or "
                "null for none",
            )
        if self.objective_name not in valid:
            # The task's default objective must be computed too, or every trial would fail.
            raise SpecError(
                "training.metrics",
                f"the default objective of task {task}, '{self.objective_name}', is not computed with these "
                f"metrics: add its metric to training.metrics or set objective.name to one of {valid}",
            )
        return self

    def _check_numeric_for_cmaes(self) -> None:
        # CMA-ES samples numbers only (Optuna would draw a list of names at random, unguided).
        if self.tuner.algorithm != "cmaes":
            return
        for field, param in tuned_params(self).items():
            if isinstance(param, NameChoice):
                raise SpecError(
                    "tuner.algorithm",
                    f"cmaes tunes numeric hyperparameters only, and {field} lists names: use tpe, or give "
                    f"{field} a single value",
                )

    @model_validator(mode="after")
    def _enqueued_fit_space(self) -> Self:
        if self.tuner.enqueue:
            try:
                self.tuner.enqueue = enqueued_values(self)
            except EnqueueError as exc:
                raise SpecError(exc.field, exc.message) from None
        return self

    def _check_targets(self) -> None:
        """`JobCreate`'s rules on the data's targets (none without data), run where they always ran, so
        a request breaking several rules gets the same error as before the split."""

    def resolved(self) -> Self:
        """A copy with every default the task implies written out, as the job is stored and shown."""
        return self.model_copy(
            update={
                "objective": (self.objective or ObjectiveSpec(name=self.objective_name)).model_copy(
                    update={"name": self.objective_name, "direction": self.objective_direction}
                ),
                "training": self.training.model_copy(
                    update={"loss": self.loss, "metrics": list(self.metrics)}
                ),
                "model": self.model.model_copy(update={"output_activation": self.output_activation}),
            }
        )

    @property
    def loss(self) -> str:
        return self.training.loss or TASK_RULES[self.task].loss

    @property
    def metrics(self) -> tuple[str, ...]:
        given = self.training.metrics
        return tuple(given) if given is not None else TASK_RULES[self.task].metrics

    @property
    def output_activation(self) -> str:
        return self.model.output_activation or TASK_RULES[self.task].output_activation

    @property
    def computed_metrics(self) -> list[str]:
        return computed_metrics(self.metrics)

    @property
    def objective_name(self) -> str:
        return self.objective.name if self.objective else TASK_RULES[self.task].objective

    @property
    def objective_direction(self) -> Direction:
        if self.objective is not None and self.objective.direction is not None:
            return self.objective.direction
        return metric_direction(self.objective_name)

    @property
    def queue(self) -> str:
        return queue_for(self.resources.accelerator)

    def without_data(self) -> JobSpec:
        """This spec as a `JobSpec` (a copy without the data, for `JobCreate`)."""
        return JobSpec.model_validate(self.model_dump(exclude={"data"}))


class JobCreate(JobSpec):
    """A tuning job as POSTed to /v1/jobs: the spec and its data (inline, or a data set's reference)."""

    data: DataSpec

    def _check_targets(self) -> None:
        train, validation = self.data.train, self.data.validation
        if train is None:
            return  # a data set's targets are checked against its columns when the job is submitted
        sections = {"data.train.y": train.y}
        if validation is not None:
            sections["data.validation.y"] = validation.y
        if self.task is Task.REGRESSION:
            for field, targets in sections.items():
                strings = [i for i, v in enumerate(targets) if isinstance(v, str)]
                if strings:
                    shown = ", ".join(f"row {i} ({targets[i]!r})" for i in strings[:5])
                    raise SpecError(
                        field, f"regression needs numeric targets: {len(strings)} hold strings: {shown}"
                    )
            return
        with needed_for("check a classifier's labels"):
            from service.core.labels import LabelError, as_labels, check_classes, classes_of, to_indices
        labels = {}
        for field, targets in sections.items():
            try:
                labels[field] = as_labels(targets)
            except LabelError as exc:
                raise SpecError(field, str(exc)) from None
        classes = classes_of(labels["data.train.y"])
        problem = check_classes(self.task, classes, max_classes=2**62)
        if problem is not None:
            raise SpecError("data.train.y", problem)
        if validation is not None:
            try:
                to_indices(labels["data.validation.y"], classes)
            except LabelError as exc:
                raise SpecError("data.validation.y", str(exc)) from None

    @property
    def classes(self) -> list[Label] | None:
        """An inline classifier's classes, sorted; None for regression and for data sets."""
        if self.task is Task.REGRESSION or self.data.train is None:
            return None
        with needed_for("read a classifier's classes"):
            from service.core.labels import as_labels, classes_of
        return classes_of(as_labels(self.data.train.y))


def queue_for(accelerator: str) -> str:
    """The Celery queue of a job: `gpu` for GPU jobs; `cpu` for the rest (`any` included)."""
    return "gpu" if accelerator == "gpu" else "cpu"


def stored_queue(spec: dict[str, Any]) -> str:
    """The Celery queue of a job from its stored spec (a JobSpec's JSON), without validating the spec."""
    return queue_for(spec.get("resources", {}).get("accelerator", "any"))


@dataclass(frozen=True)
class DataShape:
    """What the limits need of a job's data: rows, the model's input width and its output units."""

    rows: int
    features: int
    outputs: int
    classes: int = 0
    field: str = "data.train.x"  # where the data's problems are reported
    classes_field: str = "data.train.y"


def inline_shape(spec: JobCreate) -> DataShape | None:
    """The shape of inline data; None for a data set (`job_data` finds its shape once it is resolved)."""
    if spec.data.train is None:
        return None
    classes = spec.classes or []
    return DataShape(
        spec.data.rows, spec.data.inline_features, output_units(spec.task, classes), len(classes)
    )


def check_limits(spec: JobCreate, limits: Limits, shape: DataShape | None = None) -> list[SpecError]:
    """Every configured hard limit the request goes over; empty when within all of them.

    `shape` is the data's, for a data set once it is resolved; inline data is measured here.
    """
    problems: list[SpecError] = []
    shape = shape or inline_shape(spec)

    def over(field: str, value: float, limit: int, what: str) -> None:
        if value > limit:
            problems.append(
                SpecError(field, f"{what} {_count_text(value)} is over this service's limit of {limit}")
            )

    if shape is not None and spec.data.train is not None:
        over(shape.field, shape.rows, limits.max_rows, "rows (train and validation)")
    if shape is not None:
        over(shape.field, shape.features, limits.max_features, "features")
    over(
        "model.hidden_layers", bounds(spec.model.hidden_layers)[1], limits.max_hidden_layers, "hidden layers"
    )
    over("model.units", bounds(spec.model.units)[1], limits.max_units, "units")
    over("training.epochs", spec.training.epochs, limits.max_epochs, "epochs")
    if spec.training.early_stopping is not None:
        # Patience beyond the epochs of an execution never stops anything; the epoch limit bounds it.
        over(
            "training.early_stopping.patience",
            spec.training.early_stopping.patience,
            limits.max_epochs,
            "patience",
        )
    if spec.tuner.max_epochs is not None:
        over("tuner.max_epochs", spec.tuner.max_epochs, limits.max_epochs, "epochs")
    over("tuner.max_trials", spec.tuner.max_trials, limits.max_trials, "trials")
    over(
        "tuner.executions_per_trial",
        spec.tuner.executions_per_trial,
        limits.max_executions_per_trial,
        "executions per trial",
    )
    over(
        "tuner.max_parallel_trials",
        spec.tuner.max_parallel_trials,
        limits.max_parallel_trials,
        "parallel trials",
    )
    over("tuner.factor", spec.tuner.factor, limits.max_hyperband_factor, "hyperband factor")
    over(
        "tuner.hyperband_iterations",
        spec.tuner.hyperband_iterations,
        limits.max_hyperband_iterations,
        "hyperband iterations",
    )
    if spec.limits.max_failed_trials is not None:
        # More failed trials than trials can never happen; the trial limit bounds it.
        over("limits.max_failed_trials", spec.limits.max_failed_trials, limits.max_trials, "failed trials")
    over("training.batch_size", bounds(spec.training.batch_size)[1], limits.max_rows, "batch size")
    for field, param, limit in (
        ("model.hidden_layers", spec.model.hidden_layers, limits.max_hidden_layers),
        ("model.units", spec.model.units, limits.max_units),
        ("training.batch_size", spec.training.batch_size, limits.max_rows),
    ):
        if isinstance(param, IntRange) and param.step is not None:
            over(f"{field}.step", param.step, limit, "step")
    problems += _space_problems(spec, limits, {p.field for p in problems})
    if shape is not None:
        if shape.classes > limits.max_classes:
            problems.append(
                SpecError(
                    shape.classes_field,
                    f"the target has {shape.classes} classes, over this service's limit of "
                    f"{limits.max_classes} classes",
                )
            )
        # The model's size follows from features, layers, units and classes: once each is within its limit.
        if not {p.field for p in problems} & (_MODEL_SHAPE_FIELDS | {shape.field, shape.classes_field}):
            problems += _model_size_problems(spec, shape, limits)
    return problems


_MODEL_SHAPE_FIELDS = {
    "model.hidden_layers",
    "model.hidden_layers.step",
    "model.units",
    "model.units.step",
}


# keras-tuner's name of each request field it can tune (`worker.space`); units are units_0, units_1, ...
HYPERPARAMETER_NAMES = {
    "model.hidden_layers": "hidden_layers",
    "model.units": "units",
    "model.activation": "activation",
    "model.dropout": "dropout",
    "optimizer.name": "optimizer",
    "optimizer.learning_rate": "learning_rate",
    "training.batch_size": "batch_size",
}


def named_params(spec: JobSpec) -> dict[str, tuple[str, object]]:
    """`tuned_params` by hyperparameter name (`units` stands for units_0, units_1 ...): the request field
    that sets each, and its value."""
    return {HYPERPARAMETER_NAMES[field]: (field, value) for field, value in tuned_params(spec).items()}


def tuned_params(spec: JobSpec) -> dict[str, object]:
    """Every value of the request that becomes a keras-tuner hyperparameter, by field path."""
    return {
        "model.hidden_layers": spec.model.hidden_layers,
        "model.units": spec.model.units,
        "model.activation": spec.model.activation,
        "model.dropout": spec.model.dropout,
        "optimizer.name": spec.optimizer.name,
        "optimizer.learning_rate": spec.optimizer.learning_rate,
        "training.batch_size": spec.training.batch_size,
    }


def _space_problems(spec: JobCreate, limits: Limits, reported: set[str]) -> list[SpecError]:
    # keras-tuner copies the whole space (every choice's values) into each trial's stored state, and a
    # grid search lists every value of every range on each step: both must stay small.
    problems: list[SpecError] = []
    skipped = False
    for field, param in tuned_params(spec).items():
        if field in reported or f"{field}.step" in reported:
            skipped = True  # over a limit of its own (layers, units, batch size): one problem is enough
            continue
        if (
            isinstance(param, IntChoice | FloatChoice | NameChoice)
            and len(param.values) > limits.max_choice_values
        ):
            problems.append(
                SpecError(
                    f"{field}.values",
                    f"{len(param.values)} values is over this service's limit of {limits.max_choice_values} "
                    "values in one list",
                )
            )
            continue
        count = value_count(param)
        if count > limits.max_range_values:
            size = "more values than can be counted" if count == math.inf else f"{_count_text(count)} values"
            problems.append(
                SpecError(
                    field,
                    f"this range has {size} at its step, over this service's limit of "
                    f"{limits.max_range_values} values per hyperparameter: use a larger step, or leave "
                    "step out to sample the range continuously",
                )
            )
    if problems or skipped or spec.tuner.algorithm != "grid":
        return problems
    combinations = grid_size(spec)
    if combinations > limits.max_grid_size:
        problems.append(
            SpecError(
                "tuner.algorithm",
                f"this grid search walks {_count_text(combinations)} combinations of hyperparameter values, "
                f"over this service's limit of {limits.max_grid_size}: tune fewer values, or use random or "
                "bayesian search",
            )
        )
    return problems


def grid_size(spec: JobSpec) -> int:
    """The combinations of values a grid search over the job's space walks.

    Units are one hyperparameter per layer, active only while that layer exists: n layers contribute
    units ** n combinations. Call it only for a space whose every range is within the limits.
    """
    params = tuned_params(spec)
    units = int(value_count(params.pop("model.units")))
    layers = grid_values(params.pop("model.hidden_layers"))  # type: ignore[arg-type]
    size: int = sum(units**count for count in layers)
    for param in params.values():
        size *= int(value_count(param))
    return size


def largest_model_parameters(spec: JobSpec, shape: DataShape) -> int:
    """Weights and biases of the largest mlp the job's space allows: most layers, each of most units."""
    features, outputs = shape.features, shape.outputs
    layers, units = int(bounds(spec.model.hidden_layers)[1]), int(bounds(spec.model.units)[1])
    return (features + 1) * units + (layers - 1) * (units + 1) * units + (units + 1) * outputs


def _model_size_problems(spec: JobSpec, data: DataShape, limits: Limits) -> list[SpecError]:
    parameters = largest_model_parameters(spec, data)
    if parameters <= limits.max_model_parameters:
        return []
    shape = (
        f"{data.features} features, {int(bounds(spec.model.hidden_layers)[1])} hidden layers of "
        f"{int(bounds(spec.model.units)[1])} units, an output layer of {data.outputs}"
    )
    return [
        SpecError(
            "model",
            f"the largest model this search space allows ({shape}) has {_count_text(parameters)} parameters, "
            f"over this service's limit of {limits.max_model_parameters}: tune fewer layers or units",
        )
    ]


def _count_text(value: float) -> str:
    """A count as digits; one with more than 20 digits (labels like 1e300 make such counts) as 1.23e+45."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    digits = str(value)
    if not isinstance(value, int) or len(digits) <= 20:
        return digits
    return f"{digits[0]}.{digits[1:3]}e+{len(digits) - 1}"
