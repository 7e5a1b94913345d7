"""GET /metrics in Prometheus' text format: jobs by status, trials, trial durations, queue depths, and this
API process' request latencies.

What the job store holds (jobs, trial counters kept by the workers, queue lengths) is read from Redis on
each scrape, so every API replica reports the same values for them; request latencies are the scraped
replica's own. Like /healthz, /metrics needs no API key: it carries counts, never a tenant's data.

prometheus_client is loaded at the first scrape (`service.api.metrics_export`), not at start: requests are
timed into a LatencyHistogram of this module until then and after.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.schemas import ErrorBody
from service.core.lazy_imports import needed_for
from service.core.store import JobStore

PATH = "/metrics"
# The text format every Prometheus reads, which generate_latest writes (its CONTENT_TYPE_LATEST names a newer
# version whose escaping it applies only when asked).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request durations in seconds: reads answer in milliseconds, a large job body takes seconds to parse.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "unmatched"  # the route label of requests no route matched (404s, refused hosts): one series

router = APIRouter(tags=["health"])


class LatencyHistogram:
    """Request durations by (method, route template, status class): per series, the count in each of
    LATENCY_BUCKETS (and above the last), their sum. Plain Python, so that timing each request needs no
    prometheus_client: `service.api.metrics_export` loads it at the first scrape and reads these."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self._series: dict[tuple[str, str, str], LatencySeries] = {}
        self._lock = threading.Lock()  # requests are timed on the event loop, scrapes read in a thread

    def observe(self, labels: tuple[str, str, str], seconds: float) -> None:
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = LatencySeries([0] * (len(self.bounds) + 1))
            # Prometheus' buckets hold durations up to and including their bound.
            series.counts[bisect.bisect_left(self.bounds, seconds)] += 1
            series.total += seconds

    def snapshot(self) -> dict[tuple[str, str, str], LatencySeries]:
        """A copy of every series so far."""
        with self._lock:
            return {labels: LatencySeries(list(s.counts), s.total) for labels, s in self._series.items()}


@dataclass
class LatencySeries:
    """One series of a LatencyHistogram: counts by bucket (not cumulative; the last is above every bound)
    and the sum of the durations."""

    counts: list[int]
    total: float = 0.0


class RequestLatency:
    """ASGI middleware: each HTTP request's duration into `histogram`, labelled by method, the matched
    route's template (`/v1/jobs/{job_id}`, so the series stay few) and status class (`2xx`)."""

    def __init__(self, app: ASGIApp, histogram: LatencyHistogram) -> None:
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
            self.histogram.observe(
                (scope["method"], route_label(scope), f"{status // 100}xx"), time.perf_counter() - started
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
    with needed_for("serve /metrics"):
        from service.api import metrics_export
    return Response(metrics_export.scrape(request.app), media_type=CONTENT_TYPE)


def install(app: FastAPI, store: JobStore) -> None:
    """Serve /metrics and time every request (call after the app's other middleware: it runs first)."""
    app.state.metrics_store = store
    app.state.request_latency = latency = LatencyHistogram()
    app.add_middleware(RequestLatency, histogram=latency)
    app.include_router(router)
