"""Finalization of a job (POST /v1/jobs/{id}/finalize): its best trial's hyperparameters retrained on the
training and validation rows together, for the best trial's epoch count, evaluated on a test set when one
was given, and stored as `final-model` with its model card beside the search's best model.

The model is built by the trials' own builder (`worker.model_builder`) from the job's stored data
(`worker.data`); its preprocessing stays the one fitted on the training rows, so the final model takes raw
rows exactly like the best model. Only the run the job's `finalization` names writes its outcome
(`worker.job_runs`): one replaced by a newer finalize is dropped.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from functools import partial
from importlib import metadata
from typing import Any

import keras
import numpy as np

from service.core.artifacts import ArtifactStore
from service.core.catalog import Task
from service.core.data_plan import DataPlan
from service.core.finalization import Finalization, FinalizationStatus
from service.core.predictions import Cell
from service.core.records import BestTrial, utcnow
from service.core.store_runs import Finalizations
from worker import job_runs
from worker.constants import configuration
from worker.context import WorkerContext, load_spec
from worker.data import dataset_test_rows, job_data
from worker.model_builder import build_model
from worker.outcome import exported_model
from worker.predictions import model_inputs
from worker.training import TrainData

_LIBRARIES = ("tensorflow", "keras", "keras-tuner")


def finalize(ctx: WorkerContext, job_id: str, run_id: str, test: dict[str, Any] | None) -> None:
    """Run the job's finalization `run_id` unless it was replaced or has ended; its outcome is stored."""
    timeout = ctx.settings.finalize_timeout_seconds
    job_runs.execute(Finalizations(ctx.store), job_id, run_id, timeout, partial(_run, ctx, job_id, test))


def _run(
    ctx: WorkerContext, job_id: str, test: dict[str, Any] | None, record: Finalization
) -> dict[str, Any]:
    """Train, evaluate and store the final model and its card; the finalization's new fields."""
    run_id = record.run_id
    began = time.monotonic()
    job = ctx.store.get_job(job_id)
    if job is None or job.best is None or job.data is None:
        raise ValueError(f"job '{job_id}' has no best trial to finalize")
    spec = load_spec(ctx.store, job_id)
    data = job_data(ctx.store, ctx.artifacts, job_id, spec.task)
    best = job.best
    values = {k: v for k, v in best.hyperparameters.items() if not k.startswith("tuner/")}
    epochs = best.best_epoch + 1 if best.best_epoch is not None else spec.training.epochs
    seed = spec.tuner.seed
    if seed is not None:
        keras.utils.set_random_seed(seed)  # TensorFlow's seed too: model.fit shuffles with it
    both = _train_and_validation(data.train)
    model = build_model(spec, values, both, units=data.units, target_scale=data.target_scale)
    batch_size = int(configuration(spec, values)["batch_size"])
    deadline = _Deadline(record.deadline_at)
    model.fit(
        both.x_train,
        both.y_train,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        verbose=0,
        callbacks=[deadline],
    )
    if deadline.passed:
        setting = Finalization.timeout_setting
        raise job_runs.RunFailed(
            "timed_out",
            f"the finalization did not end by its deadline ({setting} after it started): stopped after "
            f"epoch {deadline.passed} of {epochs}; raise {setting}",
        )
    exported = exported_model(model, data, spec)
    logs = model.evaluate(both.x_train, both.y_train, batch_size=batch_size, verbose=0, return_dict=True)
    train_metrics = _metrics(logs)
    test_metrics, test_rows = None, 0
    if test is not None:
        x, targets = _test_set(ctx, job.data, test)
        y = _trainer_targets(targets, spec.task)
        test_metrics = _metrics(exported.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True))
        test_rows = len(targets)
    _save_model(ctx.artifacts, job_id, run_id, exported)
    card = {
        "job_id": job_id,
        "run_id": run_id,
        "trial_id": best.trial_id,
        "created_at": utcnow().isoformat(),
        "data": {
            "source": job.data.source,
            "dataset": job.data.dataset,
            "checksum": job.data.split.checksum,
            "split": job.data.split.model_dump(mode="json"),
            "rows_trained": len(both.x_train),
            "test_rows": test_rows,
            "test_dataset": None if test is None else test.get("dataset"),
        },
        "hyperparameters": values,
        "constants": best.constants,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "search": _search_metrics(best),
        "metrics": {"train": train_metrics, "test": test_metrics},
        "libraries": {name: _version(name) for name in _LIBRARIES},
        "wall_seconds": round(time.monotonic() - began, 3),
    }
    _save_card(ctx.artifacts, job_id, run_id, card)
    if ctx.store.get_status(job_id) is None:
        ctx.artifacts.delete_job(job_id)  # deleted while this trained: leave none of its files behind
        raise ValueError(f"job '{job_id}' was deleted")
    # What the job now stores counts against its tenant's artifact_bytes quota.
    ctx.store.set_job_usage(job_id, ctx.artifacts.job_bytes(job_id))
    return {
        "status": FinalizationStatus.SUCCEEDED,
        "epochs": epochs,
        "train_metrics": train_metrics,
        "test_metrics": test_metrics,
    }


class _Deadline(keras.callbacks.Callback):  # type: ignore[misc]
    """Stops the training after the first epoch that ends past `deadline`; `passed` is that epoch (from 1),
    0 while none has."""

    def __init__(self, deadline: datetime) -> None:
        super().__init__()
        self.deadline = deadline
        self.passed = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if utcnow() > self.deadline:
            self.passed = epoch + 1
            self.model.stop_training = True


def _train_and_validation(train: TrainData) -> TrainData:
    """The training and validation rows as one training set (no validation rows left)."""
    x = np.concatenate([train.x_train, train.x_val])
    y = np.concatenate([train.y_train, train.y_val])
    return TrainData(x, y, x[:0], y[:0])


def _test_set(ctx: WorkerContext, plan: DataPlan, test: dict[str, Any]) -> tuple[Any, np.ndarray]:
    """The test rows as the final model takes them (raw, like predict's), and their targets."""
    if "dataset" not in test:
        rows: list[list[Cell]] = [list(row) for row in test["rows"]]
        return model_inputs(rows, plan.features), np.asarray(test["targets"])
    columns, targets = dataset_test_rows(ctx.artifacts, plan, str(test["dataset"]))
    if all(f.type == "numeric" for f in plan.features):
        matrix = np.stack([columns[f.name] for f in plan.features], axis=1).astype(np.float32)
        return matrix, targets
    inputs: dict[str, np.ndarray] = {}
    for feature in plan.features:
        values = columns[feature.name]
        if feature.type == "categorical":  # a missing category as the model takes it, as in predict
            inputs[feature.name] = np.asarray(["" if v is None else str(v) for v in values], dtype=object)
        else:
            inputs[feature.name] = values.astype(np.float32)
    return inputs, targets


def _trainer_targets(y: np.ndarray, task: Task) -> np.ndarray:
    """As the model's loss takes them (`worker.data`): class indices for multiclass, else one float column."""
    if task is Task.MULTICLASS_CLASSIFICATION:
        return y.astype(np.int32).reshape(-1)
    return y.astype(np.float32).reshape(-1, 1)


def _metrics(logs: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in logs.items()}


def _search_metrics(best: BestTrial) -> dict[str, Any]:
    return {"objective_value": best.objective_value, "metrics": best.metrics, "best_epoch": best.best_epoch}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _save_model(artifacts: ArtifactStore, job_id: str, run_id: str, model: keras.Model) -> None:
    """Store the model as `final-model`; readers see the old one or the new, never half."""
    path = artifacts.local_path(f"jobs/{job_id}/candidates/final-{run_id}.keras")
    model.save(path)
    artifacts.blobs.move_file(artifacts.final_model_key(job_id), path)


def _save_card(artifacts: ArtifactStore, job_id: str, run_id: str, card: dict[str, Any]) -> None:
    path = artifacts.local_path(f"jobs/{job_id}/candidates/final-card-{run_id}.json")
    path.write_text(json.dumps(card, indent=2, sort_keys=True))
    artifacts.blobs.move_file(artifacts.final_model_card_key(job_id), path)
