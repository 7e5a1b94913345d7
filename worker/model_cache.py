"""Traced models a worker process keeps between trials of the same layers.

Tracing a model's epoch loop costs a second or more (`worker.fast_training`), often more than a short
trial's training. A trial whose layers this process has trained before, whatever their units, activation
and dropout (a trial of the same job with the same depth and optimizer: a hyperband trial going on from
an earlier one, most trials of a search over a few depths, a re-check of the best trials), takes that
model and its trace, and trains it exactly as a freshly built model (`trainer_for` copies the fresh
model's weights, seeds and optimizer state into it; the kept model's widths, activations and rates are
free, `worker.elastic_models`).

Only values that the traced loop reads as variables or arguments may differ between the trials that share
a model: the units (variables of free shape), the activation (a variable picking one of the job's
choices), the dropout rate (a variable; 0 skips the layer) and the learning rate (variables), the batch
size and the epochs (arguments of the loop).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import keras

from service.core.spec import JobSpec
from worker import elastic_models
from worker.constants import configuration

# What the traced loop takes as a variable or an argument: trials that differ only in these share a model.
_NOT_TRACED = frozenset({"learning_rate", "batch_size", "activation", "dropout"})
_NOT_TRACED_PREFIXES = ("tuner/", "units_")
MAX_MODELS = 8
MAX_PARAMETERS = 4_000_000  # over all kept models; each also keeps optimizer moments and best weights


def layers_key(job_id: str, spec: JobSpec, values: dict[str, Any]) -> str:
    """Which of a job's trials can share one traced model: every configuration value that is traced in."""
    traced = {
        name: value
        for name, value in configuration(spec, values).items()
        if name not in _NOT_TRACED and not name.startswith(_NOT_TRACED_PREFIXES)
    }
    return json.dumps([job_id, traced], sort_keys=True, default=str)


class ModelCache:
    """The most recently used traced models of this process, up to a count and a number of parameters.

    A model is taken out while a trial trains it and kept again afterwards, so two users never share one.
    """

    def __init__(self, max_models: int = MAX_MODELS, max_parameters: int = MAX_PARAMETERS) -> None:
        self.max_models = max_models
        self.max_parameters = max_parameters
        self._models: OrderedDict[str, tuple[keras.Model, int]] = OrderedDict()
        # How many models left for good (dropped, or taken and never kept again) since it was last reset:
        # `worker.runtime.release_memory` lets the garbage collector see what it froze once a few have.
        self.drops = 0

    def take(self, key: str) -> keras.Model | None:
        """The model kept under `key`, no longer kept; None when there is none."""
        entry = self._models.pop(key, None)
        return entry[0] if entry is not None else None

    def keep(self, key: str, model: keras.Model) -> None:
        """Keep `model` as the most recent (sized by its weights' values now), dropping the least recently
        kept ones beyond the limits."""
        parameters = elastic_models.parameters(model)
        self._models.pop(key, None)
        if parameters > self.max_parameters:
            self.drops += 1
            return
        self._models[key] = (model, parameters)
        while len(self._models) > self.max_models or self.parameters > self.max_parameters:
            self._models.popitem(last=False)
            self.drops += 1

    @property
    def parameters(self) -> int:
        return sum(parameters for _, parameters in self._models.values())

    def __len__(self) -> int:
        return len(self._models)


TRACED = ModelCache()  # this process's; a worker's pool processes each have their own


@dataclass
class Kept:
    """The traced model a block trains: the one kept for its architecture, or None; the model the block
    leaves here is kept for the next."""

    model: keras.Model | None = None


@contextmanager
def traced_model(job_id: str, spec: JobSpec, values: dict[str, Any], loop: str) -> Iterator[Kept]:
    """This process's kept model for the trial's architecture, taken while the block trains it and kept
    again after it; with the `fast` loop only (KTUNE_TRAINING_LOOP). A block that raises keeps nothing."""
    if loop != "fast":
        yield Kept()
        return
    key = layers_key(job_id, spec, values)
    kept = Kept(TRACED.take(key))
    try:
        yield kept
    except BaseException:
        TRACED.drops += 1
        raise
    if kept.model is not None:
        TRACED.keep(key, kept.model)
