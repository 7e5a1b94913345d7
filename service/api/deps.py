"""FastAPI dependencies, as Annotated aliases routes can declare.

They only read what `create_app` made, so they are `async def`: FastAPI runs a plain `def` dependency in a
worker thread, a hop (and a GIL hand-over) per dependency per request.

The app's settings, job store, artifact store and job body reader are made once by
`create_app` and kept on `app.state`.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Path, Request

from service.api.job_bodies import JobBodies
from service.core.api_keys import ApiKeyStore
from service.core.artifacts import ArtifactStore
from service.core.dataset_store import DatasetStore
from service.core.errors import NotFound, shorten
from service.core.idempotency import IdempotencyStore
from service.core.settings import Settings
from service.core.store import JobStore


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


async def get_artifacts(request: Request) -> ArtifactStore:
    artifacts: ArtifactStore = request.app.state.artifacts
    return artifacts


async def get_datasets(request: Request) -> DatasetStore:
    datasets: DatasetStore = request.app.state.datasets
    return datasets


async def get_idempotency(request: Request) -> IdempotencyStore:
    keys: IdempotencyStore = request.app.state.idempotency
    return keys


def is_uuid(text: str) -> bool:
    """Whether `text` is an id as this service makes them (job and data-set ids are str(uuid.uuid4())):
    36 characters, lowercase hex and hyphens."""
    if len(text) != 36:
        return False
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


JobIdPath = Annotated[str, Path(description="the job's id, as POST /v1/jobs returned it")]
"""A `{job_id}` as the path has it, not yet checked: `get_job_id` checks it."""


async def get_job_id(job_id: JobIdPath) -> str:
    """The `{job_id}` of a path; raises NotFound for anything that is not a job id, before any lookup."""
    return check_job_id(job_id)


def check_job_id(job_id: str) -> str:
    """`job_id`, if it is a job id; raises NotFound otherwise. So a path such as `/v1/jobs/<id>:trials` can
    never reach a store key other than a job's."""
    if not is_uuid(job_id):
        raise NotFound(
            f"no job with id '{shorten(job_id, 40)}': job ids are UUIDs, as POST /v1/jobs returns them",
            "job_not_found",
        )
    return job_id


async def get_api_keys(request: Request) -> ApiKeyStore:
    keys: ApiKeyStore = request.app.state.api_keys
    return keys


async def get_job_bodies(request: Request) -> JobBodies:
    bodies: JobBodies = request.app.state.job_bodies
    return bodies


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[JobStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
DatasetsDep = Annotated[DatasetStore, Depends(get_datasets)]
JobIdDep = Annotated[str, Depends(get_job_id)]
JobBodiesDep = Annotated[JobBodies, Depends(get_job_bodies)]
ApiKeysDep = Annotated[ApiKeyStore, Depends(get_api_keys)]
IdempotencyDep = Annotated[IdempotencyStore, Depends(get_idempotency)]
