"""Predictions with a job's best model, for POST /v1/jobs/{id}/predict (the API never loads TensorFlow).

Rows arrive checked by the API (`service.core.predictions.check_rows`): a list of cells per row in the job's
feature order. The best model takes raw rows (`worker.preprocess`): one float array when every feature is
numeric, else a dict of one 1-D array per column. Models are loaded in Keras' safe mode and kept in a small
cache per process, keyed by job and best trial, so a new best model is loaded afresh.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import keras
import numpy as np

from service.core.artifacts import ArtifactStore
from service.core.catalog import Task
from service.core.data_plan import FeatureInfo
from service.core.predictions import Cell, predictions_of
from service.core.replies import Replies
from worker.context import WorkerContext

log = logging.getLogger(__name__)

_CACHE_SIZE = 4
_MODELS: OrderedDict[tuple[str, str], keras.Model] = OrderedDict()


class PredictionError(Exception):
    """A reason the API turns into its own error (`code` as the API's error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def answer(ctx: WorkerContext, job_id: str, reply_id: str, rows: list[list[Cell]]) -> None:
    """Predict `rows` and send the answer, or the reason there is none, to the API waiting on `reply_id`."""
    result: dict[str, Any]
    try:
        result = {"predictions": predict(ctx, job_id, rows)}
    except PredictionError as exc:
        result = {"error": {"code": exc.code, "message": exc.message}}
    except Exception:
        log.exception("predictions of job %s failed", job_id)
        result = {
            "error": {
                "code": "prediction_failed",
                "message": f"the worker could not predict with job '{job_id}''s best model (its log has "
                "the reason); try again, or download the model",
            }
        }
    Replies(ctx.store).send(reply_id, result, ctx.settings.predict_timeout_seconds)


def predict(ctx: WorkerContext, job_id: str, rows: list[list[Cell]]) -> list[dict[str, Any]]:
    """One prediction per row with the job's best model. Raises PredictionError."""
    record = ctx.store.get_job(job_id)
    if record is None:
        raise PredictionError("job_not_found", f"no job with id '{job_id}'")
    no_model = PredictionError("no_best_model", f"job '{job_id}' has no best model yet")
    if record.best is None or record.data is None:
        raise no_model
    model = _model(ctx.artifacts, job_id, record.best.trial_id)
    if model is None:
        raise no_model
    outputs = model.predict(model_inputs(rows, record.data.features), verbose=0)
    return predictions_of(np.asarray(outputs).tolist(), Task(record.spec["task"]), record.data.classes)


def model_inputs(rows: list[list[Cell]], features: list[FeatureInfo]) -> Any:
    """Rows as the exported model takes them: a float32 matrix, or a dict of columns with any categorical
    feature (strings as 1-D object arrays, which Keras' predict accepts)."""
    if all(f.type == "numeric" for f in features):
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(features))
    columns: dict[str, np.ndarray] = {}
    for index, feature in enumerate(features):
        values = [row[index] for row in rows]
        dtype = object if feature.type == "categorical" else np.float32
        columns[feature.name] = np.asarray(values, dtype=dtype)
    return columns


def _model(artifacts: ArtifactStore, job_id: str, version: str) -> keras.Model | None:
    """The job's best model as of its best trial `version`, loaded once; None when there is no file."""
    key = (job_id, version)
    if key in _MODELS:
        _MODELS.move_to_end(key)
        return _MODELS[key]
    with artifacts.fetched(artifacts.best_model_key(job_id)) as path:
        if not path.exists():
            return None
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    for cached in [k for k in _MODELS if k[0] == job_id]:
        del _MODELS[cached]  # an older best model of the job
    _MODELS[key] = model
    while len(_MODELS) > _CACHE_SIZE:
        _MODELS.popitem(last=False)
    return model
