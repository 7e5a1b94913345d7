"""FastAPI dependencies, as Annotated aliases routes can declare."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import Depends

from service.core.artifacts import ArtifactStore
from service.core.settings import Settings, get_settings
from service.core.store import JobStore


@lru_cache(maxsize=1)
def get_store() -> JobStore:
    settings = get_settings()
    return JobStore.from_url(settings.redis_url, settings.key_prefix)


@lru_cache(maxsize=1)
def get_artifacts() -> ArtifactStore:
    return ArtifactStore(get_settings().artifact_dir)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
