"""The /v1/datasets endpoints: HTTP only; the work is in dataset_service."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from service.api import dataset_service
from service.api.admission import check_storage
from service.api.auth import UNAUTHORIZED, CallerDep, authenticate
from service.api.deps import ApiKeysDep, ArtifactsDep, DatasetsDep, SettingsDep, StoreDep
from service.api.schemas import DatasetList, DatasetPublic, ErrorBody
from service.core.dataset_models import BUILTINS
from service.core.errors import BadRequest, FieldProblem, InvalidRequest, KtuneError, UnsupportedMediaType
from service.core.quotas import tenant_quotas

router = APIRouter(
    prefix="/v1/datasets", tags=["datasets"], dependencies=[Depends(authenticate)], responses=UNAUTHORIZED
)

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV with a header row, Parquet, or .npz with arrays x and y",
                        },
                        "name": {
                            "type": "string",
                            "description": "a name to list it by (default: file name)",
                        },
                    },
                }
            }
        },
    }
}

_FIELD_BYTES = 64 * 1024  # the `name` field; the file itself is spooled to disk by the parser
_NAME_CHARS = 200  # as a job's name


@router.post(
    "",
    summary="Upload a data set",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    responses={
        400: {"model": ErrorBody, "description": "the multipart body cannot be read"},
        408: {
            "model": ErrorBody,
            "description": "the upload did not arrive within KTUNE_DATASET_UPLOAD_SECONDS",
        },
        413: {"model": ErrorBody, "description": "the file is larger than KTUNE_MAX_DATASET_BYTES"},
        429: {
            "model": ErrorBody,
            "description": "the tenant stores its quota of artifact bytes (`quota_exceeded`)",
        },
        415: {"model": ErrorBody, "description": "the body is not multipart/form-data"},
        422: {
            "model": ErrorBody,
            "description": "no `file` field, or a file that is not a readable data set",
        },
    },
    openapi_extra=_UPLOAD_BODY,
)
async def upload_dataset(
    request: Request,
    response: Response,
    store: DatasetsDep,
    jobs: StoreDep,
    keys: ApiKeysDep,
    artifacts: ArtifactsDep,
    settings: SettingsDep,
    caller: CallerDep,
) -> DatasetPublic:
    """Upload a CSV (with a header row), Parquet or .npz file; 201 with its columns, their types and
    missing-value counts. Jobs then name it by id in `data.dataset`."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMediaType(
            "send the data set as multipart/form-data with the file in the field 'file' "
            "(curl -F file=@data.csv)"
        )
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=_FIELD_BYTES)
    except MultiPartException as exc:
        raise BadRequest(f"the multipart body cannot be read: {exc.message}", "bad_multipart") from exc
    try:
        upload, name = form.get("file"), form.get("name")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest(
                [FieldProblem("file", "missing: send the data set as the multipart field 'file'")]
            )
        if name is not None and not isinstance(name, str):
            raise InvalidRequest([FieldProblem("name", "must be text, not a file")])
        if name is not None and len(name) > _NAME_CHARS:
            raise InvalidRequest([FieldProblem("name", f"is {len(name)} characters; at most {_NAME_CHARS}")])
        limit = settings.limits.max_dataset_bytes
        if upload.size is not None and upload.size > limit:
            raise KtuneError(
                f"the file is {upload.size} bytes, over this service's limit of {limit} bytes",
                "file_too_large",
                413,
            )
        quotas = await run_in_threadpool(tenant_quotas, keys, settings.quotas, caller.tenant)
        await run_in_threadpool(check_storage, jobs, quotas, caller.tenant)
        async with request.app.state.ingest_limiter:
            record = await run_in_threadpool(
                dataset_service.store_upload,
                store,
                artifacts,
                upload.file,
                upload.filename,
                name,
                caller.tenant,
            )
    finally:
        await form.close()
    response.headers["Location"] = f"/v1/datasets/{record.id}"
    return dataset_service.to_public(record)


def ingest_limiter(concurrency: int) -> anyio.CapacityLimiter:
    """Uploads read into data sets at once; more wait their turn (each reads a block at a time)."""
    return anyio.CapacityLimiter(concurrency)


@router.get("", summary="List data sets", response_model=DatasetList, responses={422: {"model": ErrorBody}})
def list_datasets(
    store: DatasetsDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> DatasetList:
    """The built-in data sets (first page), then uploads, newest first, a page at a time."""
    records, next_cursor = store.page(caller.tenant, limit, cursor)  # a bad cursor: errors' 422
    builtins = [] if cursor else [dataset_service.builtin_public(name) for name in BUILTINS]
    return DatasetList(
        items=builtins + [dataset_service.to_public(r) for r in records], next_cursor=next_cursor
    )


_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "no such data set"}}


@router.get("/{dataset_id}", summary="Get a data set", response_model=DatasetPublic, responses=_ERRORS)
def get_dataset(dataset_id: str, store: DatasetsDep, caller: CallerDep) -> DatasetPublic:
    """One data set: an upload by id, or a built-in set by name."""
    return dataset_service.get(store, dataset_id, caller.tenant)


@router.delete(
    "/{dataset_id}",
    summary="Delete an uploaded data set",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        **_ERRORS,
        409: {"model": ErrorBody, "description": "a queued or running job uses it, or it is built in"},
    },
)
def delete_dataset(
    dataset_id: str, store: DatasetsDep, artifacts: ArtifactsDep, caller: CallerDep
) -> Response:
    """Delete an uploaded data set and its file; 409 while a queued or running job uses it."""
    dataset_service.delete(store, artifacts, dataset_id, caller.tenant)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
