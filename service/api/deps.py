"""FastAPI dependencies, as Annotated aliases routes can declare.

The app's settings, job store, artifact store and job body reader are made once by `create_app` and kept
on `app.state`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.job_bodies import JobBodies
from service.core.artifacts import ArtifactStore
from service.core.settings import Settings
from service.core.store import JobStore


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def get_artifacts(request: Request) -> ArtifactStore:
    artifacts: ArtifactStore = request.app.state.artifacts
    return artifacts


def get_job_bodies(request: Request) -> JobBodies:
    bodies: JobBodies = request.app.state.job_bodies
    return bodies


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[JobStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
JobBodiesDep = Annotated[JobBodies, Depends(get_job_bodies)]
