"""The store's worker records (`service.core.store_workers`), against a real Redis server: heartbeats,
draining marks, the broker's queue lengths and when each queue was last served."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from service.core.heartbeats import WorkerHeartbeat
from service.core.records import utcnow
from service.core.store import JobStore, broker_lists

pytestmark = pytest.mark.integration


def heartbeat(queues: list[str]) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        queues=queues,
        concurrency=2,
        busy=1,
        waiting={q: 0 for q in queues},
        stalled_since=None,
        updated_at=utcnow(),
    )


def test_a_node_is_draining_from_its_mark_until_it_is_cleared(scratch_store: JobStore) -> None:
    assert not scratch_store.is_draining("n1")
    scratch_store.set_draining("n1", True)
    assert scratch_store.is_draining("n1") and not scratch_store.is_draining("n2")
    scratch_store.set_draining("n1", True)  # marking twice is fine
    scratch_store.set_draining("n1", False)
    assert not scratch_store.is_draining("n1")
    scratch_store.set_draining("n1", False)  # clearing twice too


def test_heartbeats_read_back_by_node_until_they_expire(scratch_store: JobStore) -> None:
    assert scratch_store.worker_heartbeats() == {}
    first, second = heartbeat(["cpu"]), heartbeat(["gpu"])
    scratch_store.put_worker_heartbeat("n1", first, ttl=0.3)
    scratch_store.put_worker_heartbeat("n2", second, ttl=30)
    assert scratch_store.worker_heartbeats() == {"n1": first, "n2": second}
    newer = heartbeat(["cpu", "gpu"])
    scratch_store.put_worker_heartbeat("n2", newer, ttl=30)
    time.sleep(0.6)
    assert scratch_store.worker_heartbeats() == {"n2": newer}, "n1's expired; n2's latest"
    assert scratch_store.redis.smembers(scratch_store.keys.workers) == {"n2"}, "a gone node is forgotten"


@pytest.fixture
def queue_name(scratch_store: JobStore) -> Iterator[str]:
    """A Celery queue's name no other test uses; its broker lists are removed afterwards."""
    name = f"contract-{uuid.uuid4().hex[:8]}"
    yield name
    scratch_store.redis.delete(*broker_lists(name))


def test_queue_lengths_count_every_priority_step(scratch_store: JobStore, queue_name: str) -> None:
    assert scratch_store.queue_lengths([queue_name]) == {queue_name: 0}
    lists = broker_lists(queue_name)
    scratch_store.redis.rpush(lists[0], "m1", "m2")
    scratch_store.redis.rpush(lists[-1], "m3")
    assert scratch_store.queue_lengths([queue_name]) == {queue_name: 3}
    assert scratch_store.queue_lengths([]) == {}


def test_a_queue_served_mark_is_the_latest(scratch_store: JobStore) -> None:
    assert scratch_store.queue_served_at("cpu") is None
    before = utcnow()
    scratch_store.mark_queues_served(["cpu", "gpu"])
    served = scratch_store.queue_served_at("cpu")
    assert served is not None and before <= served <= utcnow()
    assert scratch_store.queue_served_at("gpu") is not None
    assert scratch_store.queue_served_at("other") is None
    time.sleep(0.01)
    scratch_store.mark_queues_served(["cpu"])
    later = scratch_store.queue_served_at("cpu")
    assert later is not None and later - served > timedelta(0)
    scratch_store.mark_queues_served([])
