"""What the data-set endpoints do, apart from HTTP: store an upload, read, list, delete; and find the data
sets a job names."""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from service.api.deps import is_uuid
from service.api.schemas import DatasetPublic
from service.core.artifacts import ArtifactStore
from service.core.dataset_models import BUILTINS, DatasetFileError, DatasetSource
from service.core.dataset_store import DatasetInUse, DatasetRecord, DatasetStore
from service.core.errors import Conflict, FieldProblem, InvalidRequest, NotFound, Unavailable, shorten
from service.core.lazy_imports import needed_for
from service.core.records import utcnow

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

_COPY_CHUNK = 1 << 20


def store_upload(
    store: DatasetStore,
    artifacts: ArtifactStore,
    upload: BinaryIO,
    filename: str | None,
    name: str | None,
    tenant: str,
) -> DatasetRecord:
    """Read an uploaded file into a stored data set; raises InvalidRequest for a file it cannot read.

    The upload is copied to the artifact store's local directory a chunk at a time and read from there a
    block at a time: never whole in memory. The table written is then published to the store (with S3 it
    stays here too, as this machine's cached copy).
    """
    with needed_for("read an uploaded data set"):  # before the upload is copied
        from service.core import datasets
    dataset_id = str(uuid.uuid4())
    part = artifacts.upload_path(dataset_id)
    table = artifacts.dataset_table_path(dataset_id)
    try:
        with part.open("wb") as target:
            shutil.copyfileobj(upload, target, _COPY_CHUNK)
        info = datasets.ingest(part, filename, table)
        size = table.stat().st_size
        artifacts.publish(artifacts.dataset_table_key(dataset_id), keep=True)
    except DatasetFileError as exc:
        artifacts.delete_dataset(dataset_id)
        raise InvalidRequest([FieldProblem("file", str(exc))], "invalid_dataset") from exc
    except BaseException:
        artifacts.delete_dataset(dataset_id)
        raise
    finally:
        part.unlink(missing_ok=True)
    record = DatasetRecord(
        id=dataset_id, tenant=tenant, name=name or filename, created_at=utcnow(), info=info
    )
    try:
        store.create(record, size)
    except BaseException:
        artifacts.delete_dataset(dataset_id)
        raise
    return record


def to_public(record: DatasetRecord) -> DatasetPublic:
    info = record.info
    return DatasetPublic(
        id=record.id,
        name=record.name,
        builtin=False,
        task=None,
        created_at=record.created_at,
        **info.model_dump(),
    )


def builtin_public(name: str) -> DatasetPublic:
    with needed_for("read a built-in data set"):
        from service.core import datasets
    info = datasets.builtin_info(name)
    return DatasetPublic(
        id=name, name=name, builtin=True, task=BUILTINS[name], created_at=None, **info.model_dump()
    )


def get(store: DatasetStore, dataset_id: str, tenant: str) -> DatasetPublic:
    """A built-in set by name or one of the tenant's uploads by id; raises NotFound."""
    if dataset_id in BUILTINS:
        return builtin_public(dataset_id)
    record = _record(store, dataset_id, tenant)
    if record is None:
        raise NotFound(_not_found(dataset_id), "dataset_not_found")
    return to_public(record)


def _record(store: DatasetStore, dataset_id: str, tenant: str) -> DatasetRecord | None:
    """The tenant's upload; None for an id that is not one, or another tenant's (never told apart)."""
    if not is_uuid(dataset_id):
        return None
    record = store.get(dataset_id)
    return record if record is not None and record.tenant == tenant else None


def _not_found(dataset_id: str) -> str:
    return (
        f"no data set with id '{shorten(dataset_id, 40)}': upload one with POST /v1/datasets, or name a "
        f"built-in set ({', '.join(BUILTINS)})"
    )


def delete(store: DatasetStore, artifacts: ArtifactStore, dataset_id: str, tenant: str) -> None:
    """Delete one of the tenant's uploads and its file. Raises NotFound, or Conflict while a job uses it."""
    if dataset_id in BUILTINS:
        raise Conflict(f"'{dataset_id}' is a built-in data set; it cannot be deleted", "builtin_dataset")
    record = _record(store, dataset_id, tenant)
    if record is None:
        raise NotFound(_not_found(dataset_id), "dataset_not_found")
    try:
        deleted = store.delete(record)
    except DatasetInUse as exc:
        raise Conflict(
            f"data set '{dataset_id}' is used by job '{exc.job_id}', which is queued or running: cancel the "
            "job "
            "or wait for it to end, then delete the data set",
            "dataset_in_use",
        ) from exc
    if not deleted:
        raise NotFound(_not_found(dataset_id), "dataset_not_found")
    artifacts.delete_dataset(dataset_id)


def source(store: DatasetStore, artifacts: ArtifactStore, ref: str, field: str, tenant: str) -> DatasetSource:
    """The data set a job names (a built-in name or one of the tenant's uploads by id); raises
    InvalidRequest naming `field`."""
    if ref in BUILTINS:
        with needed_for("read a built-in data set"):
            from service.core import datasets
        return DatasetSource(ref, True, datasets.builtin_info(ref), _builtin_table(ref))
    record = _record(store, ref, tenant)
    if record is None:
        raise InvalidRequest([FieldProblem(field, _not_found(ref))])
    return DatasetSource(ref, False, record.info, _uploaded_table(artifacts, ref))


def _builtin_table(name: str) -> Callable[[], pa.Table]:
    def table() -> pa.Table:
        with needed_for("read a built-in data set"):
            from service.core import datasets
        return datasets.builtin_table(name)

    return table


def _uploaded_table(artifacts: ArtifactStore, dataset_id: str) -> Callable[[], pa.Table]:
    def table() -> pa.Table:
        path = artifacts.local_dataset_table(dataset_id)
        with needed_for("read a data set"):
            from service.core import datasets
        try:
            return datasets.open_table(path)
        except FileNotFoundError as exc:
            # The record is in Redis but the file is not here: an artifact directory this API does not share.
            log.error("data set %s has a record but no file at %s", dataset_id, path)
            raise Unavailable(
                f"data set '{dataset_id}' is recorded but its file is missing from this service's artifact "
                "store (KTUNE_ARTIFACT_DIR); nothing was queued",
                "dataset_file_missing",
            ) from exc

    return table
