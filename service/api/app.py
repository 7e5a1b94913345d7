"""The FastAPI application."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from service.api import (
    docs_pages,
    errors,
    metrics,
    openapi,
    openapi_examples,
    routes_datasets,
    routes_events,
    routes_health,
    routes_jobs,
)
from service.api.async_redis import AsyncRedis
from service.api.auth import check_auth_setting
from service.api.body_limit import BodyLimitMiddleware
from service.api.cleanup import run_cleanup
from service.api.event_reader import EventReader
from service.api.job_bodies import JobBodies
from service.api.rate_limit import JobRateLimit
from service.api.sweeper import run_sweeper
from service.api.trusted_hosts import TrustedHosts
from service.core import lazy_imports
from service.core.api_keys import ApiKeyStore
from service.core.artifacts import artifact_store
from service.core.dataset_store import DatasetStore
from service.core.idempotency import IdempotencyStore
from service.core.lazy_imports import MissingModule, missing
from service.core.settings import Settings, get_settings
from service.core.store import JobStore


async def _warm_up(delay: float) -> None:
    """After start-up (`/healthz` answers at once), load what the first job and scrape need, off the loop."""
    if delay < 0:
        return
    await asyncio.sleep(delay)
    await asyncio.to_thread(lazy_imports.warm_up)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the sweeper for lost work and the cleanup of finished jobs run while it serves.

    Raises UnsafeAuthSetting for KTUNE_AUTH=off on an address that is not loopback, however it is started,
    and MissingModule when a module it loads on first use (`service.core.lazy_imports`) is not installed.
    """
    settings = settings or get_settings()
    check_auth_setting(settings)
    if absent := missing():
        raise MissingModule(absent[0], "start")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        interval = max(1.0, settings.stale_queued_seconds / 4)
        sweeper = asyncio.create_task(run_sweeper(app.state.store, settings, interval))
        cleaner = asyncio.create_task(run_cleanup(app.state.store, app.state.artifacts, settings, interval))
        warming = asyncio.create_task(_warm_up(settings.warm_imports_seconds))
        # What is imported and built by now lives as long as the process: frozen out of the garbage
        # collector, a full collection takes microseconds instead of ~50 ms of the event loop.
        gc.freeze()
        try:
            yield
        finally:
            sweeper.cancel()
            cleaner.cancel()
            warming.cancel()
            app.state.job_bodies.close()
            await app.state.async_redis.close()

    app = FastAPI(
        title="ktune",
        version="0.1.0",
        summary="Hyperparameter tuning of Keras models: POST a job, poll it, download the best model.",
        lifespan=lifespan,
        # Served by docs_pages with their assets, which FastAPI's own pages fetch from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    # Redis clients connect on first use, so building the store here costs nothing at start-up.
    app.state.store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    app.state.artifacts = artifact_store(settings)
    app.state.datasets = DatasetStore(app.state.store)
    app.state.api_keys = ApiKeyStore(app.state.store)
    app.state.idempotency = IdempotencyStore(app.state.store)
    app.state.job_bodies = JobBodies(settings)
    # The hot reads' and event streams' client: it connects on first use, on the serving loop.
    app.state.async_redis = AsyncRedis(settings.redis_url)
    app.state.event_reader = EventReader(settings, app.state.store, app.state.async_redis)
    app.state.ingest_limiter = routes_datasets.ingest_limiter(settings.dataset_ingest_concurrency)
    app.state.job_rate_limit = JobRateLimit(settings, app.state.store.rate_limit_prefix())
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.limits.max_body_bytes,
        timeout_seconds=settings.body_timeout_seconds,
        # An upload's multipart body is the file and a few hundred bytes of part headers and fields.
        larger={
            "/v1/datasets": (settings.limits.max_dataset_bytes + 64 * 1024, settings.dataset_upload_seconds)
        },
    )
    # Added last, so it runs first: a request for a host this service is not is refused before its body
    # is read.
    app.add_middleware(TrustedHosts, allowed_hosts=settings.trusted_hosts)
    # Outermost: times every request, refused ones too.
    metrics.install(app, app.state.store)
    errors.install(app)
    app.include_router(routes_jobs.hot_reads)
    app.include_router(routes_jobs.router)
    app.include_router(routes_events.router)
    app.include_router(routes_datasets.router)
    app.include_router(routes_health.router)
    docs_pages.install(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the request models of routes that read their own bodies, with the error
    answers and headers clients get (`openapi.document_answers`) and examples of the contract's requests."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        known = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model_schema in routes_jobs.request_schemas().items():
            known.setdefault(name, model_schema)
        openapi.document_answers(schema)
        openapi_examples.document_examples(schema, openapi_examples.load_requests())
    return app.openapi_schema  # type: ignore[return-value]
