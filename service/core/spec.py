"""The tuning-job request: what to train, the search space, the objective and the search algorithm.

Structural and semantic rules live on the models (no settings needed); `check_limits` applies the
configurable hard limits. Both raise errors that name the offending field. `JobSpec` is a job without its
data (what is stored as the job's spec, and what workers load); `JobCreate` adds the inline data.
"""

from __future__ import annotations

import math
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from service.core.catalog import (
    ACTIVATIONS,
    OPTIMIZERS,
    TASK_RULES,
    Direction,
    Task,
    computed_metrics,
    metric_direction,
)
from service.core.errors import shorten
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
from service.core.settings import Limits


class SpecError(ValueError):
    """A rule of the request was broken; `field` is the dotted path of the offending value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ArrayData(StrictModel):
    """Inline arrays: x is rows of numeric features, y one target per row."""

    x: list[list[float]] = Field(min_length=1, description="2-D: one list of numbers per row")
    y: list[float] = Field(min_length=1, description="1-D: one target per row")

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
        if not all(math.isfinite(v) for v in self.y):
            raise ValueError("y holds NaN or infinity; only finite numbers are allowed")
        return self


class DataSpec(StrictModel):
    """Training data and how to validate. Inline arrays today; uploads and built-in sets will join here."""

    train: ArrayData
    validation: ArrayData | None = None
    validation_split: Float | None = Field(
        None, gt=0, lt=1, description="fraction of train rows (the last ones, as Keras takes them) held out"
    )

    @model_validator(mode="after")
    def _one_validation(self) -> Self:
        if self.validation is not None and self.validation_split is not None:
            raise ValueError("give either validation or validation_split, not both")
        if self.validation is not None and len(self.validation.x[0]) != len(self.train.x[0]):
            raise ValueError(
                f"validation.x has {len(self.validation.x[0])} features but train.x has "
                f"{len(self.train.x[0])}"
            )
        if self.validation is None:
            rows = len(self.train.x)
            held_out = rows - math.ceil(rows * (1 - self.effective_split))
            if held_out < 1 or held_out >= rows:
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
    def rows(self) -> int:
        return len(self.train.x) + (len(self.validation.x) if self.validation else 0)

    @property
    def features(self) -> int:
        return len(self.train.x[0])

    def all_targets(self) -> list[float]:
        return self.train.y + (self.validation.y if self.validation else [])


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
    """The metric the search optimises, and whether lower or higher is better."""

    name: str
    direction: Direction | None = Field(None, description="inferred from the name when left out")


class TunerSpec(StrictModel):
    """The search algorithm (keras-tuner's oracles) and its budget."""

    algorithm: Literal["random", "grid", "bayesian", "hyperband"] = "random"
    max_trials: Int = Field(10, ge=1)
    executions_per_trial: Int = Field(1, ge=1)
    max_parallel_trials: Int = Field(
        4, ge=1, description="trials of this job running at once, on whichever workers serve its queue"
    )
    seed: Int | None = Field(None, ge=0, lt=2**31)
    max_epochs: Int | None = Field(None, ge=1, description="hyperband only; defaults to training.epochs")
    factor: Int = Field(3, ge=2, description="hyperband only")
    hyperband_iterations: Int = Field(1, ge=1, description="hyperband only")


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
        valid = self.computed_metrics
        if self.objective is not None and self.objective.name not in valid:
            raise SpecError(
                "objective.name",
                f"objective '{shorten(self.objective.name)}' is not a metric this job computes: "
                f"choose one of {valid}",
            )
        if self.objective_name not in valid:
            # The task's default objective must be computed too, or every trial would fail.
            raise SpecError(
                "training.metrics",
                f"the default objective of task {task}, '{self.objective_name}', is not computed with these "
                f"metrics: add its metric to training.metrics or set objective.name to one of {valid}",
            )
        return self

    def _check_targets(self) -> None:
        """`JobCreate`'s rules on the data's targets (none without data), run where they always ran, so
        a request breaking several rules gets the same error as before the split."""

    def resolved(self) -> Self:
        """A copy with every default the task implies written out, as the job is stored and shown."""
        return self.model_copy(
            update={
                "objective": ObjectiveSpec(name=self.objective_name, direction=self.objective_direction),
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
    """A tuning job as POSTed to /v1/jobs: the spec and its inline data."""

    data: DataSpec

    def _check_targets(self) -> None:
        task = self.task.value
        if self.task is Task.REGRESSION:
            return
        sections = {"data.train.y": self.data.train.y}
        if self.data.validation is not None:
            sections["data.validation.y"] = self.data.validation.y
        for field, targets in sections.items():
            if not all(float(v).is_integer() and v >= 0 for v in targets):
                raise SpecError(field, f"{task} needs class labels 0, 1, 2 ...: whole numbers >= 0")
            if self.task is Task.BINARY_CLASSIFICATION and not set(targets) <= {0.0, 1.0}:
                raise SpecError(field, "binary_classification needs labels 0 and 1 only")
        if len(set(self.data.train.y)) < 2:
            raise SpecError("data.train.y", "train.y has a single class; a classifier needs at least two")

    @property
    def output_units(self) -> int:
        """1 for binary classification and regression, the number of classes for multiclass."""
        if self.task is Task.MULTICLASS_CLASSIFICATION:
            return int(max(self.data.all_targets())) + 1
        return 1


def queue_for(accelerator: str) -> str:
    """The Celery queue of a job: `gpu` for GPU jobs; `cpu` for the rest (`any` included)."""
    return "gpu" if accelerator == "gpu" else "cpu"


def check_limits(spec: JobCreate, limits: Limits) -> list[SpecError]:
    """Every configured hard limit the request goes over; empty when within all of them."""
    problems: list[SpecError] = []

    def over(field: str, value: float, limit: int, what: str) -> None:
        if value > limit:
            problems.append(
                SpecError(field, f"{what} {_count_text(value)} is over this service's limit of {limit}")
            )

    over("data.train.x", spec.data.rows, limits.max_rows, "rows (train and validation)")
    over("data.train.x", spec.data.features, limits.max_features, "features")
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
    problems += _class_problems(spec, limits)
    # The model's size follows from features, layers, units and classes: once each is within its limit.
    if not {p.field for p in problems} & _MODEL_SHAPE_FIELDS:
        problems += _model_size_problems(spec, limits)
    return problems


_MODEL_SHAPE_FIELDS = {
    "data.train.x",
    "data.train.y",
    "data.validation.y",
    "model.hidden_layers",
    "model.hidden_layers.step",
    "model.units",
    "model.units.step",
}


def _tuned_params(spec: JobCreate) -> dict[str, object]:
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
    for field, param in _tuned_params(spec).items():
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


def grid_size(spec: JobCreate) -> int:
    """The combinations of values a grid search over the job's space walks.

    Units are one hyperparameter per layer, active only while that layer exists: n layers contribute
    units ** n combinations. Call it only for a space whose every range is within the limits.
    """
    params = _tuned_params(spec)
    units = int(value_count(params.pop("model.units")))
    layers = grid_values(params.pop("model.hidden_layers"))  # type: ignore[arg-type]
    size: int = sum(units**count for count in layers)
    for param in params.values():
        size *= int(value_count(param))
    return size


def _class_problems(spec: JobCreate, limits: Limits) -> list[SpecError]:
    if spec.task is not Task.MULTICLASS_CLASSIFICATION:
        return []  # binary labels are 0 and 1 (checked on the model)
    sections = {"data.train.y": spec.data.train.y}
    if spec.data.validation is not None:
        sections["data.validation.y"] = spec.data.validation.y
    problems = []
    for field, targets in sections.items():
        if max(targets) >= limits.max_classes:
            problems.append(
                SpecError(
                    field,
                    f"labels up to {_count_text(max(targets))} make {_count_text(spec.output_units)} "
                    f"classes, over this service's limit of {limits.max_classes} classes: labels must be "
                    f"whole numbers 0 to {limits.max_classes - 1}",
                )
            )
    return problems


def largest_model_parameters(spec: JobCreate) -> int:
    """Weights and biases of the largest mlp the job's space allows: most layers, each of most units."""
    features, outputs = spec.data.features, spec.output_units
    layers, units = int(bounds(spec.model.hidden_layers)[1]), int(bounds(spec.model.units)[1])
    return (features + 1) * units + (layers - 1) * (units + 1) * units + (units + 1) * outputs


def _model_size_problems(spec: JobCreate, limits: Limits) -> list[SpecError]:
    parameters = largest_model_parameters(spec)
    if parameters <= limits.max_model_parameters:
        return []
    shape = (
        f"{spec.data.features} features, {int(bounds(spec.model.hidden_layers)[1])} hidden layers of "
        f"{int(bounds(spec.model.units)[1])} units, an output layer of {spec.output_units}"
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
