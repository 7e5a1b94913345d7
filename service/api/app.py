"""The FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from service.api import errors, routes_health, routes_jobs
from service.api.body_limit import BodyLimitMiddleware
from service.api.cleanup import run_cleanup
from service.api.sweeper import run_sweeper
from service.core.artifacts import ArtifactStore
from service.core.settings import Settings, get_settings
from service.core.store import JobStore


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the sweeper for lost work and the cleanup of finished jobs run while it serves."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        interval = max(1.0, settings.stale_queued_seconds / 4)
        sweeper = asyncio.create_task(run_sweeper(app.state.store, settings, interval))
        cleaner = asyncio.create_task(run_cleanup(app.state.store, app.state.artifacts, settings, interval))
        try:
            yield
        finally:
            sweeper.cancel()
            cleaner.cancel()

    app = FastAPI(
        title="ktune",
        version="0.1.0",
        summary="Hyperparameter tuning of Keras models: POST a job, poll it, download the best model.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # Redis clients connect on first use, so building the store here costs nothing at start-up.
    app.state.store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    app.state.artifacts = ArtifactStore(settings.artifact_dir)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    errors.install(app)
    app.include_router(routes_jobs.router)
    app.include_router(routes_health.router)
    return app
