"""GET /metrics in Prometheus' text format: jobs by status, trials, trial durations, queue depths, and this
API process' request latencies.

What the job store holds (jobs, trial counters kept by the workers, queue lengths) is read from Redis on
each scrape, so every API replica reports the same values for them; request latencies are the scraped
replica's own. Like /healthz, /metrics needs no API key: it carries counts, never a tenant's data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.schemas import ErrorBody
from service.core import trial_metrics
from service.core.queue import QUEUES
from service.core.store import JobStore

PATH = "/metrics"
# The text format every Prometheus reads, which generate_latest writes (its CONTENT_TYPE_LATEST names a newer
# version whose escaping it applies only when asked).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request durations in seconds: reads answer in milliseconds, a large job body takes seconds to parse.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "unmatched"  # the route label of requests no route matched (404s, refused hosts): one series

router = APIRouter(tags=["health"])


class StoreCollector(Collector):
    """The job store's numbers, read on each scrape: a few cheap reads (index sizes, one hash, list
    lengths) whatever the number of jobs."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("ktune_jobs", "Jobs by status, every tenant's", labels=["status"])
        for status, count in self.store.job_counts().items():
            jobs.add_metric([status.value], count)
        yield jobs
        depth = GaugeMetricFamily(
            "ktune_queue_depth", "Messages waiting in each Celery queue, all priorities", labels=["queue"]
        )
        for queue, length in self.store.queue_lengths(QUEUES).items():
            depth.add_metric([queue], length)
        yield depth
        counts = trial_metrics.read(self.store)
        yield CounterMetricFamily(
            "ktune_trials_started",
            "Trials a worker started running (one taken over from a lost worker counts again)",
            value=counts.started,
        )
        ended = CounterMetricFamily(
            "ktune_trials_finished",
            "Trials that ended, by how: completed, failed or cancelled",
            labels=["status"],
        )
        for trial_status, trial_count in counts.ended.items():
            ended.add_metric([trial_status.value], trial_count)
        yield ended
        duration = HistogramMetricFamily(
            "ktune_trial_duration_seconds", "Running time of each completed or failed trial"
        )
        duration.add_metric(
            [],
            [(_bound(bound), count) for bound, count in counts.duration_buckets],
            sum_value=counts.duration_sum,
        )
        yield duration


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def registry_for(store: JobStore) -> tuple[CollectorRegistry, Histogram]:
    """A registry of its own for one app (tests make many apps in a process): the store's numbers and the
    request-latency histogram the middleware fills."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    latency = Histogram(
        "ktune_http_request_duration_seconds",
        "Time this API process took to answer, by method, route template and status class",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return registry, latency


class RequestLatency:
    """ASGI middleware: each HTTP request's duration into `histogram`, labelled by method, the matched
    route's template (`/v1/jobs/{job_id}`, so the series stay few) and status class (`2xx`)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes before an answer starts is answered as a 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.histogram.labels(scope["method"], route_label(scope), f"{status // 100}xx").observe(
                time.perf_counter() - started
            )


def route_label(scope: Scope) -> str:
    """The template of the route that served a request, the path of a mount (`/docs-assets`), or
    UNMATCHED."""
    if (path := getattr(scope.get("route"), "path", None)) is not None:
        return str(path)
    # A mount (static files) is not recorded as the route; it moved its path into root_path.
    app_root, root = str(scope.get("app_root_path", "")), str(scope.get("root_path", ""))
    if "endpoint" in scope and "app_root_path" in scope and root.startswith(app_root) and root != app_root:
        return root[len(app_root) :]
    return UNMATCHED


@router.get(
    PATH,
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus' text exposition format (version 0.0.4)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        503: {"model": ErrorBody, "description": "the job store is unreachable (`unavailable`)"},
    },
)
def metrics(request: Request) -> Response:
    """Jobs by status, trials started and finished, trial durations, queue depths (all from the job store,
    the same on every API replica) and this process' request latencies, for Prometheus to scrape."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)


def install(app: FastAPI, store: JobStore) -> None:
    """Serve /metrics and time every request (call after the app's other middleware: it runs first)."""
    registry, latency = registry_for(store)
    app.state.metrics_registry, app.state.request_latency = registry, latency
    app.add_middleware(RequestLatency, histogram=latency)
    app.include_router(router)
