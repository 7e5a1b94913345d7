"""What a valid job would do, told without running it: POST /v1/jobs/validate's answer.

Pure arithmetic on the resolved spec and its data's shape, so the API answers without TensorFlow: the metric
names come from `catalog.computed_metrics` (what `worker.model_builder` compiles the model with), the search
space is counted as keras-tuner walks it, and the largest model's parameters are counted layer by layer.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from service.core.catalog import computed_metrics
from service.core.params import FloatRange, IntRange, grid_values, is_tuned, value_count
from service.core.spec import (
    HYPERPARAMETER_NAMES,
    OPTUNA_ALGORITHMS,
    DataShape,
    JobSpec,
    grid_size,
    largest_model_parameters,
    tuned_params,
)


class ObjectiveView(BaseModel):
    name: str
    direction: str


class Hyperparameter(BaseModel):
    """One tuned value of the request."""

    name: str = Field(description="keras-tuner's name (`units` stands for units_0, units_1, ...)")
    field: str = Field(description="where the request sets it")
    values: int | None = Field(description="how many values the search can pick; null: continuous")


class SearchSpace(BaseModel):
    size: int | None = Field(
        description="distinct configurations the search can try (a grid search: the combinations it "
        "walks); null when a continuous range makes them unbounded"
    )
    hyperparameters: list[Hyperparameter]


class ValidationWarning(BaseModel):
    code: str
    message: str


class JobValidation(BaseModel):
    """A valid job request, as POST /v1/jobs would accept it; nothing was stored or queued."""

    valid: bool = True
    metrics: list[str] = Field(description="the names each trial logs per epoch (objective candidates)")
    objective: ObjectiveView
    search_space: SearchSpace
    largest_model_parameters: int = Field(
        description="weights and biases of the largest network the space allows (preprocessing layers, "
        "which have no trainable weights, not counted)"
    )
    warnings: list[ValidationWarning]


def logged_metrics(spec: JobSpec) -> list[str]:
    """The metric names the worker's model logs: loss and each metric, then their val_ versions (every job
    validates, on a split when no validation set is given)."""
    return computed_metrics(spec.metrics, with_validation=True)


def _distinct_values(param: object) -> float:
    """How many values a random or bayesian search can pick; math.inf for a continuous range."""
    if isinstance(param, FloatRange) and param.step is None:
        return math.inf
    if isinstance(param, IntRange) and param.step is None:
        return param.max - param.min + 1
    return value_count(param)


def _layer_counts(param: object) -> list[int]:
    if isinstance(param, IntRange) and param.step is None:
        return list(range(param.min, param.max + 1))
    return grid_values(param)  # type: ignore[arg-type]


def space_size(spec: JobSpec) -> int | None:
    """Distinct configurations of the job's space (its grid's combinations for a grid search); None when
    unbounded. Call only for a spec within the service's limits (as a valid request is)."""
    if spec.tuner.algorithm == "grid":
        return grid_size(spec)
    params = tuned_params(spec)
    if any(math.isinf(_distinct_values(param)) for param in params.values()):
        return None
    units = int(_distinct_values(params.pop("model.units")))
    layers = _layer_counts(params.pop("model.hidden_layers"))
    # Each layer has its own units hyperparameter: n layers give units ** n combinations.
    size: int = sum(units**count for count in layers)
    for param in params.values():
        size *= int(_distinct_values(param))
    return size


def _hyperparameters(spec: JobSpec) -> list[Hyperparameter]:
    grid = spec.tuner.algorithm == "grid"
    listed = []
    for field, param in tuned_params(spec).items():
        if not is_tuned(param):
            continue
        count = value_count(param) if grid else _distinct_values(param)
        listed.append(
            Hyperparameter(
                name=HYPERPARAMETER_NAMES[field],
                field=field,
                values=None if math.isinf(count) else int(count),
            )
        )
    return listed


def _warnings(spec: JobSpec, size: int | None, data_warnings: list[str]) -> list[ValidationWarning]:
    found = [ValidationWarning(code="data", message=text) for text in data_warnings]
    trials = spec.tuner.max_trials
    if size is None or size >= trials or spec.tuner.algorithm == "hyperband":
        return found
    if spec.tuner.algorithm == "grid":
        found.append(
            ValidationWarning(
                code="grid_smaller_than_max_trials",
                message=f"the grid has {size} combinations but tuner.max_trials is {trials}: the search "
                f"ends after {size} trials",
            )
        )
    else:
        # keras-tuner's oracles never repeat a configuration; Optuna's samplers may.
        ending = (
            "some trials repeat a configuration"
            if spec.tuner.algorithm in OPTUNA_ALGORITHMS
            else "the search ends once it finds no configuration it has not tried"
        )
        found.append(
            ValidationWarning(
                code="space_smaller_than_max_trials",
                message=f"the search space has {size} distinct configurations but tuner.max_trials is "
                f"{trials}: {ending}",
            )
        )
    return found


def validation_of(spec: JobSpec, shape: DataShape, data_warnings: list[str]) -> JobValidation:
    """The dry run's answer for a resolved, valid `spec` on data of `shape`."""
    size = space_size(spec)
    return JobValidation(
        metrics=logged_metrics(spec),
        objective=ObjectiveView(name=spec.objective_name, direction=spec.objective_direction),
        search_space=SearchSpace(size=size, hyperparameters=_hyperparameters(spec)),
        largest_model_parameters=largest_model_parameters(spec, shape),
        warnings=_warnings(spec, size, data_warnings),
    )
