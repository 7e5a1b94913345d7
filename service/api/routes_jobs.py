"""The /v1/jobs endpoints: HTTP only; the work is in job_service."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import StreamingResponse

from service.api import finalization_service, idempotency, job_service, prediction_service, recheck_service
from service.api.auth import (
    KEYED_OPERATION,
    LOCAL_TENANT,
    UNAUTHORIZED,
    CallerDep,
    PresentedKeyDep,
    authenticate,
    authenticate_with,
    key_presented,
)
from service.api.callbacks import check_callback
from service.api.deps import (
    ApiKeysDep,
    ArtifactsDep,
    DatasetsDep,
    IdempotencyDep,
    JobBodiesDep,
    JobIdDep,
    JobIdPath,
    SettingsDep,
    StoreDep,
    check_job_id,
    is_uuid,
)
from service.api.idempotency import IdempotencyKeyDep
from service.api.job_bodies import OPENAPI_REQUEST_BODY
from service.api.job_json import job_json, page_json
from service.api.job_parsing import FIELD_ORDER, MAX_JSON_DEPTH, ParsedJob
from service.api.rate_limit import limit_job_creation, limit_job_validation
from service.api.schemas import ErrorBody, JobList, JobPublic, TrialList
from service.core.api_keys import ApiKeyStore
from service.core.artifacts import ArtifactStore
from service.core.blobs import BlobNotFound, BlobStream
from service.core.dataset_store import DatasetStore
from service.core.dry_run import JobValidation
from service.core.errors import Conflict
from service.core.finalization import Finalization, FinalizeRequest
from service.core.predictions import PredictionList, PredictRequest
from service.core.quotas import Quotas
from service.core.recheck import Recheck, RecheckRequest
from service.core.settings import Limits
from service.core.spec import JobCreate
from service.core.states import JobStatus
from service.core.store import InvalidCursor, JobStore, cursor_pattern

router = APIRouter(
    prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(authenticate)], responses=UNAUTHORIZED
)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "no such job"}}
# A route that reads a JSON body and names a job.
_JSON_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the body is not JSON"},
    408: {"model": ErrorBody, "description": "the body did not arrive within KTUNE_BODY_TIMEOUT_SECONDS"},
    413: {"model": ErrorBody, "description": "body too large"},
    **_NOT_FOUND,
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    409: {"model": ErrorBody, "description": "the job's state does not allow this"},
}


def request_schemas() -> dict[str, Any]:
    """OpenAPI components of the request bodies these routes read themselves, as FastAPI writes them."""
    probe = APIRouter()

    @probe.post("/")
    def _job(job: JobCreate) -> None: ...

    schemas: dict[str, Any] = get_openapi(title="", version="", routes=probe.routes)["components"]["schemas"]
    job = schemas["JobCreate"]
    job["properties"] = {name: job["properties"][name] for name in FIELD_ORDER}
    return schemas


@router.post(
    "",
    summary="Submit a tuning job",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses={
        400: {
            "model": ErrorBody,
            "description": "the body is not UTF-8 (`body_not_utf8`) or nests arrays and objects more than "
            f"{MAX_JSON_DEPTH} deep (`body_too_deep`)",
        },
        408: {
            "model": ErrorBody,
            "description": "the body did not arrive within KTUNE_BODY_TIMEOUT_SECONDS (`body_timeout`); "
            "the connection is closed",
        },
        413: {"model": ErrorBody, "description": "body too large"},
        415: {"model": ErrorBody, "description": "the Content-Type is not application/json (or `+json`)"},
        422: {
            "model": ErrorBody,
            "description": "invalid request; `fields` names each problem (an Idempotency-Key used before "
            "with another body: `idempotency_key_reused`; one that is not 1-255 printable ASCII "
            "characters: `invalid_idempotency_key`)",
        },
        429: {
            "model": ErrorBody,
            "description": "a quota of the tenant does not admit the job (`quota_exceeded`; the field "
            "`quota.<name>` gives its numbers; Retry-After when waiting helps), or this API key has sent "
            "KTUNE_JOB_RATE_LIMIT jobs already (`rate_limited`, with Retry-After; every POST counts, "
            "accepted or not); nothing was queued",
        },
        **idempotency.OPENAPI_RESPONSES,
        503: {
            "model": ErrorBody,
            "description": "the queue is unreachable, nothing was queued (`unavailable`); other large "
            "bodies are being parsed (`busy`, with Retry-After); the process parsing this body was lost "
            "(`parse_failed`)",
        },
    },
    openapi_extra=OPENAPI_REQUEST_BODY,
    dependencies=[Depends(limit_job_creation)],
)
async def create_job(
    request: Request,
    response: Response,
    store: StoreDep,
    datasets: DatasetsDep,
    artifacts: ArtifactsDep,
    bodies: JobBodiesDep,
    settings: SettingsDep,
    keys: ApiKeysDep,
    caller: CallerDep,
    key: IdempotencyKeyDep,
    claims: IdempotencyDep,
) -> JobPublic:
    """Validate a tuning job and queue it; poll the Location it returns."""
    job = await bodies.read(request, fingerprint=key is not None)
    await run_in_threadpool(check_callback, job.spec, settings, partial(keys.webhook_secret, caller.tenant))
    limits, quotas = settings.limits, settings.quotas
    submit = partial(_submit, store, datasets, artifacts, job, limits, caller.tenant, keys, quotas)
    if key is None:
        public = await run_in_threadpool(submit)
    else:
        assert job.fingerprint is not None
        keyed = idempotency.Keyed(
            claims,
            scope="jobs",
            noun="job",
            tenant=caller.tenant,
            key=key,
            fingerprint=job.fingerprint,
            seconds=settings.idempotency_seconds,
        )
        current = partial(_current, store, caller.tenant)
        public, replayed = await run_in_threadpool(keyed.run, submit, _id_of, current)
        if replayed:
            response.status_code = status.HTTP_200_OK
            response.headers[idempotency.REPLAYED_HEADER] = "true"
    response.headers["Location"] = f"/v1/jobs/{public.id}"
    return public


def _submit(
    store: JobStore,
    datasets: DatasetStore,
    artifacts: ArtifactStore,
    job: ParsedJob,
    limits: Limits,
    tenant: str,
    keys: ApiKeyStore,
    quotas: Quotas,
) -> JobPublic:
    record = job_service.submit(store, datasets, artifacts, job, limits, tenant, keys, quotas)
    return job_service.to_public(store, record)


def _id_of(job: JobPublic) -> str:
    return job.id


def _current(store: JobStore, tenant: str, job_id: str) -> JobPublic | None:
    """The job as it is now, for the retry of the submit that created it; None once it is deleted."""
    record = store.get_job(job_id)
    return None if record is None or record.tenant != tenant else job_service.to_public(store, record)


@router.post(
    "/validate",
    summary="Check a job without queueing it",
    response_model=JobValidation,
    responses={
        400: {"model": ErrorBody, "description": "as POST /v1/jobs"},
        408: {"model": ErrorBody, "description": "as POST /v1/jobs"},
        413: {"model": ErrorBody, "description": "body too large"},
        415: {"model": ErrorBody, "description": "as POST /v1/jobs"},
        422: {"model": ErrorBody, "description": "the same body POST /v1/jobs answers this request with"},
        429: {
            "model": ErrorBody,
            "description": "this API key has sent KTUNE_JOB_RATE_LIMIT dry runs already (`rate_limited`, "
            "with Retry-After; counted apart from job creation)",
        },
        503: {"model": ErrorBody, "description": "as POST /v1/jobs (`busy`, `parse_failed`)"},
    },
    openapi_extra=OPENAPI_REQUEST_BODY,
    dependencies=[Depends(limit_job_validation)],
)
async def validate_job(
    request: Request,
    store: StoreDep,
    datasets: DatasetsDep,
    artifacts: ArtifactsDep,
    bodies: JobBodiesDep,
    settings: SettingsDep,
    keys: ApiKeysDep,
    caller: CallerDep,
) -> JobValidation:
    """Check a job as POST /v1/jobs would, without queueing it: its metric names, search space and size."""
    job = await bodies.read(request)
    await run_in_threadpool(check_callback, job.spec, settings, partial(keys.webhook_secret, caller.tenant))
    check = partial(job_service.validate, datasets, artifacts, job, settings.limits, caller.tenant, store)
    return await run_in_threadpool(check)


# The two reads clients poll check the key in the same round trip as their read (`authenticate_with`), so
# their router has no `authenticate` of its own; every route on it must call `authenticate_with`. Their
# answers are rendered by `job_json`, which remembers each job's JSON by its stored text. They are plain
# `def` routes on the sync client: measured against `async def` routes on an asyncio client (bench/reads.py,
# docs/benchmarks.md), the asyncio client's pipeline cost more CPU than the worker-thread hop it saved.
# The job GET, the read polled most, takes no dependency: it reads the key itself (`key_presented`) and the
# store from the app, since FastAPI's solving of dependencies was a large share of its CPU (bench/reads.py).
# Its one parameter, the id, is checked in the route, so a request without a valid key is still a 401 first.
hot_reads = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=UNAUTHORIZED)


@hot_reads.get("", summary="List jobs", response_model=JobList, responses={422: {"model": ErrorBody}})
def list_jobs(
    request: Request,
    store: StoreDep,
    key: PresentedKeyDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
) -> Response:
    """List jobs, newest first, a page at a time, optionally only those with one status."""
    if cursor is not None and not cursor_pattern.match(cursor):
        # A request without a valid key is a 401 first, as on every route.
        authenticate(request, key)
        raise InvalidCursor(cursor)  # errors' 422
    keys: ApiKeyStore = request.app.state.api_keys
    # The page is read for the tenant the key had when last seen (one round trip), and read again in the
    # rare case the key turns out to be another tenant's now.
    guess = LOCAL_TENANT if key is None else keys.tenant_seen(key)
    if guess is None:
        guess = authenticate(request, key).tenant

    def page_of(tenant: str) -> Callable[[Any], object]:
        return lambda pipe: store.queue_job_page(pipe, tenant, status_filter, limit, cursor)

    caller, [reply] = authenticate_with(request, key, page_of(guess))
    if caller.tenant != guess:
        [reply] = store.read(page_of(caller.tenant))
    jobs, next_cursor = store.stored_page_from(reply, limit)
    return _json(page_json([job_json(store.counted_job(job)) for job in jobs], next_cursor))


@hot_reads.get(
    "/{job_id}",
    summary="Get a job",
    response_model=JobPublic,
    responses=_NOT_FOUND,
    openapi_extra=KEYED_OPERATION,
)
def get_job(request: Request, job_id: JobIdPath) -> Response:
    """Status, progress, best trial so far, timestamps and error of one job."""
    store: JobStore = request.app.state.store
    key = key_presented(request)
    if not is_uuid(job_id):
        # A request without a valid key is a 401 first, as on every route.
        authenticate(request, key)
        check_job_id(job_id)  # raises NotFound
    caller, replies = authenticate_with(request, key, lambda pipe: store.queue_job_views(pipe, [job_id]))
    [job] = store.stored_jobs_from([job_id], replies)
    return _json(job_json(store.counted_job(job_service.owned(job, job_id, caller.tenant))))


def _json(body: str) -> Response:
    """`body`, JSON as FastAPI would send it for the route's model (`job_json` renders it so)."""
    return Response(body, media_type="application/json")


@router.get("/{job_id}/trials", summary="List a job's trials", response_model=TrialList, responses=_NOT_FOUND)
def list_trials(
    job_id: JobIdDep,
    store: StoreDep,
    caller: CallerDep,
    history: Annotated[
        bool, Query(description="false leaves out per-epoch histories (smaller bodies)")
    ] = True,
) -> TrialList:
    """Every trial of a job with hyperparameters, per-epoch history, result, duration and worker."""
    job_service.get(store, job_id, caller.tenant)
    trials = [job_service.trial_to_public(t, history) for t in store.get_trials(job_id, history=history)]
    return TrialList(job_id=job_id, items=trials)


@router.post("/{job_id}/cancel", summary="Cancel a job", response_model=JobPublic, responses=_ERRORS)
def cancel_job(job_id: JobIdDep, store: StoreDep, caller: CallerDep) -> JobPublic:
    """Cancel a queued or running job; running trials stop within an epoch, finished ones are kept."""
    return job_service.to_public(store, job_service.cancel(store, job_id, caller.tenant))


@router.delete(
    "/{job_id}",
    summary="Delete a finished job",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        404: {"model": ErrorBody, "description": "no such job"},
        409: {
            "model": ErrorBody,
            "description": "the job is queued or running (cancel it first), or its trials are still stopping",
        },
    },
)
def delete_job(job_id: JobIdDep, store: StoreDep, artifacts: ArtifactsDep, caller: CallerDep) -> Response:
    """Delete a finished or cancelled job with its trials and artifacts; 409 while queued or running."""
    job_service.delete(store, artifacts, job_id, caller.tenant)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{job_id}/artifacts/best-model",
    summary="Download the best model",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        **_ERRORS,
        503: {"model": ErrorBody, "description": "the artifact store is unreachable"},
    },
)
def best_model(
    job_id: JobIdDep, store: StoreDep, artifacts: ArtifactsDep, caller: CallerDep
) -> StreamingResponse:
    """The best model so far as a .keras file that keras.models.load_model opens."""
    record = job_service.get(store, job_id, caller.tenant)
    no_model = Conflict(
        f"job '{job_id}' ({record.status.value}) has no completed trial yet, so no best model",
        "no_best_model",
    )
    if record.best is None:
        raise no_model
    try:
        # Opened here, so a missing object is a 409 rather than a response cut off after its headers.
        stream = artifacts.open_best_model(job_id)
    except BlobNotFound:
        raise no_model from None
    return _streamed(stream, "application/octet-stream", f"{job_id}-best-model.keras")


def _streamed(stream: BlobStream, media_type: str, filename: str) -> StreamingResponse:
    # A chunk at a time from the store (Starlette iterates it in a thread): never a whole model in memory.
    return StreamingResponse(
        iter(stream),
        media_type=media_type,
        headers={
            "Content-Length": str(stream.size),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


@router.post(
    "/{job_id}/finalize",
    summary="Finalize a job: retrain its best hyperparameters on all its rows",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Finalization,
    responses={
        **_JSON_BODY,
        409: {
            "model": ErrorBody,
            "description": "the job has not succeeded (`job_not_finished`), has no best trial "
            "(`no_best_model`), or a finalization of it is queued or running (`finalization_running`)",
        },
        422: {
            "model": ErrorBody,
            "description": "`test.x`, a row `test.x[i]`, `test.y` or `test_dataset` does not fit the job",
        },
        503: {"model": ErrorBody, "description": "the queue is unreachable"},
    },
)
def finalize(
    response: Response,
    job_id: JobIdDep,
    store: StoreDep,
    datasets: DatasetsDep,
    artifacts: ArtifactsDep,
    settings: SettingsDep,
    caller: CallerDep,
    body: Annotated[FinalizeRequest | None, Body()] = None,
) -> Finalization:
    """Retrain the best trial's hyperparameters on training + validation rows for its best epoch count (by a
    worker), evaluate on `test` if given; follow it in the job's `finalization`. A new one replaces an ended
    one."""
    request = body if body is not None else FinalizeRequest()
    run = finalization_service.finalize(store, datasets, artifacts, settings, job_id, caller.tenant, request)
    response.headers["Location"] = f"/v1/jobs/{job_id}"  # its `finalization` follows this run
    return run


@router.post(
    "/{job_id}/recheck",
    summary="Recheck a job's winner: retrain its top trials with other seeds",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Recheck,
    responses={
        **_JSON_BODY,
        409: {
            "model": ErrorBody,
            "description": "the job has not succeeded (`job_not_finished`), has no completed trial "
            "(`no_completed_trial`), or a recheck of it is queued or running (`recheck_running`)",
        },
        422: {"model": ErrorBody, "description": "`top_k` or `seeds` is out of range, or a field is unknown"},
        503: {"model": ErrorBody, "description": "the queue is unreachable"},
    },
)
def recheck(
    response: Response,
    job_id: JobIdDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    body: Annotated[RecheckRequest | None, Body()] = None,
) -> Recheck:
    """Retrain the job's `top_k` best trials `seeds` times each with other seeds (by a worker) and report
    each one's objective per seed, mean and spread; follow it in the job's `recheck`. A new one replaces an
    ended one."""
    request = body if body is not None else RecheckRequest()
    run = recheck_service.recheck(store, settings, job_id, caller.tenant, request)
    response.headers["Location"] = f"/v1/jobs/{job_id}"  # its `recheck` follows this run
    return run


@router.get(
    "/{job_id}/artifacts/final-model",
    summary="Download the finalized model",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        **_ERRORS,
        503: {"model": ErrorBody, "description": "the artifact store is unreachable"},
    },
)
def final_model(
    job_id: JobIdDep, store: StoreDep, artifacts: ArtifactsDep, caller: CallerDep
) -> StreamingResponse:
    """The model POST /v1/jobs/{id}/finalize trained, as a .keras file; 409 `no_final_model` before one."""
    job_service.get(store, job_id, caller.tenant)
    stream = _final_artifact(artifacts, job_id, artifacts.final_model_key(job_id))
    return _streamed(stream, "application/octet-stream", f"{job_id}-final-model.keras")


@router.get(
    "/{job_id}/artifacts/final-model-card",
    summary="Get the finalized model's card",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/json": {}}},
        **_ERRORS,
        503: {"model": ErrorBody, "description": "the artifact store is unreachable"},
    },
)
def final_model_card(
    job_id: JobIdDep, store: StoreDep, artifacts: ArtifactsDep, caller: CallerDep
) -> StreamingResponse:
    """The final model's card (JSON): data checksum and split, hyperparameters, metrics, versions, seed."""
    job_service.get(store, job_id, caller.tenant)
    stream = _final_artifact(artifacts, job_id, artifacts.final_model_card_key(job_id))
    return _streamed(stream, "application/json", f"{job_id}-final-model-card.json")


def _final_artifact(artifacts: ArtifactStore, job_id: str, key: str) -> BlobStream:
    try:
        return artifacts.open(key)
    except BlobNotFound:
        raise Conflict(
            f"job '{job_id}' has no finalized model yet: POST /v1/jobs/{job_id}/finalize and wait for its "
            "`finalization` to succeed",
            "no_final_model",
        ) from None


@router.post(
    "/{job_id}/predict",
    summary="Predict with the best model",
    response_model=PredictionList,
    responses={
        **_JSON_BODY,
        409: {"model": ErrorBody, "description": "no trial has completed yet (`no_best_model`)"},
        422: {
            "model": ErrorBody,
            "description": "`rows` or a row `rows[i]` is not what the job's model takes",
        },
        503: {
            "model": ErrorBody,
            "description": "no worker answered within KTUNE_PREDICT_TIMEOUT_SECONDS "
            "(`prediction_unavailable`, with Retry-After), or the queue is unreachable",
        },
    },
)
async def predict(
    job_id: JobIdDep, body: PredictRequest, store: StoreDep, settings: SettingsDep, caller: CallerDep
) -> PredictionList:
    """Predict rows with the job's best model (served by a worker): a label and probabilities, or a value."""
    return await prediction_service.predict_in_thread(store, settings, job_id, caller.tenant, body)


@router.get(
    "/{job_id}/artifacts/best-hyperparameters", summary="Get the best hyperparameters", responses=_ERRORS
)
def best_hyperparameters(job_id: JobIdDep, store: StoreDep, caller: CallerDep) -> dict[str, Any]:
    """The best trial's hyperparameters, with the job's constants: its whole configuration, as JSON."""
    record = job_service.get(store, job_id, caller.tenant)
    if record.best is None:
        raise Conflict(f"job '{job_id}' ({record.status.value}) has no completed trial yet", "no_best_trial")
    return {**record.best.constants, **record.best.hyperparameters}
