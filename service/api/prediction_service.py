"""POST /v1/jobs/{id}/predict apart from HTTP: rows checked here, predicted by a worker (the API process
never loads TensorFlow), the answer handed back through Redis."""

from __future__ import annotations

import logging
import math
from functools import partial

import anyio
import anyio.to_thread
import redis

from service.api import job_service
from service.core import queue
from service.core.errors import Conflict, NotFound, Unavailable
from service.core.predictions import PredictionList, PredictRequest, check_rows
from service.core.replies import Replies
from service.core.settings import Settings
from service.core.spec import queue_for
from service.core.store import JobStore

log = logging.getLogger(__name__)

# Predictions waiting for a worker at once in one API process, each in a thread: more wait their turn
# without holding a thread, so waiting predictions never take all of the threads other routes run in.
_THREADS = 8
_limiter: anyio.CapacityLimiter | None = None


async def predict_in_thread(
    store: JobStore, settings: Settings, job_id: str, tenant: str, request: PredictRequest
) -> PredictionList:
    """`predict` in one of _THREADS threads of its own (it blocks while a worker predicts)."""
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(_THREADS)
    call = partial(predict, store, settings, job_id, tenant, request)
    return await anyio.to_thread.run_sync(call, limiter=_limiter)


def predict(
    store: JobStore, settings: Settings, job_id: str, tenant: str, request: PredictRequest
) -> PredictionList:
    """The best model's prediction of each row. Raises NotFound (another tenant's job too), Conflict
    (`no_best_model`), InvalidRequest naming `rows[i]`, Unavailable (`prediction_unavailable` when no worker
    answered in time)."""
    record = job_service.get(store, job_id, tenant)
    if record.best is None or record.data is None:
        raise Conflict(
            f"job '{job_id}' ({record.status.value}) has no completed trial yet, so no best model to "
            "predict with",
            "no_best_model",
        )
    rows = check_rows(request.rows, record.data.features, settings.predict_max_rows)
    replies, seconds = Replies(store), settings.predict_timeout_seconds
    reply_id = replies.new_id()
    job_queue = queue_for(record.spec.get("resources", {}).get("accelerator", "any"))
    try:
        queue.send_predict(job_id, reply_id, rows, job_queue, seconds)
        answer = replies.wait(reply_id, seconds)
    except (queue.QueueUnreachable, redis.RedisError) as exc:
        log.warning("could not ask for predictions of job %s: %s", job_id, exc)
        raise Unavailable("the queue is unreachable; try again shortly") from exc
    if answer is None:
        wait = math.ceil(seconds)
        error = Unavailable(
            f"no worker of the '{job_queue}' queue answered within {wait} s (they may all be busy with "
            f"trials); retry in {wait} s",
            "prediction_unavailable",
        )
        error.headers["Retry-After"] = str(wait)
        raise error
    if "error" in answer:
        code, message = answer["error"]["code"], answer["error"]["message"]
        if code == "job_not_found":
            raise NotFound(message, code)
        if code == "no_best_model":
            raise Conflict(message, code)
        raise Unavailable(message, code)
    return PredictionList.model_validate(answer)
