"""The Prometheus side of GET /metrics, loaded at the first scrape so that the API starts without
prometheus_client: the job store's numbers, read on each scrape, and this process' request latencies,
read from the LatencyHistogram that `service.api.metrics` fills for every request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.api.metrics import LatencyHistogram
from service.core import trial_metrics
from service.core.queue import QUEUES
from service.core.store import JobStore

LATENCY = "ktune_http_request_duration_seconds"
_BUILDING = threading.Lock()


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


class LatencyCollector(Collector):
    """The request latencies a LatencyHistogram holds, as the Prometheus histogram
    `ktune_http_request_duration_seconds` (cumulative buckets, `_count`, `_sum`)."""

    def __init__(self, histogram: LatencyHistogram) -> None:
        self.histogram = histogram

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            LATENCY,
            "Time this API process took to answer, by method, route template and status class",
            labels=["method", "route", "status"],
        )
        bounds = [*map(_bound, self.histogram.bounds), "+Inf"]
        for labels, series in sorted(self.histogram.snapshot().items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, series.counts, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric(list(labels), cumulative, sum_value=series.total)
        yield family


def registry_for(store: JobStore, latency: LatencyHistogram) -> CollectorRegistry:
    """A registry of its own for one app (tests make many apps in a process): the store's numbers and the
    request latencies."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    registry.register(LatencyCollector(latency))
    return registry


def scrape(app: FastAPI) -> bytes:
    """The app's metrics in Prometheus' text format; its registry is made at the first scrape."""
    with _BUILDING:
        registry: CollectorRegistry | None = getattr(app.state, "metrics_registry", None)
        if registry is None:
            registry = app.state.metrics_registry = registry_for(
                app.state.metrics_store, app.state.request_latency
            )
    return generate_latest(registry)
