"""A trial's lease, kept by a thread, against a real Redis server."""

from __future__ import annotations

import time
import uuid

import pytest

from service.core.store import JobStore
from tests.integration.conftest import wait_for
from worker.lease import trial_lease

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str) -> JobStore:
    return JobStore.from_url(redis_url, prefix=f"lease-test-{uuid.uuid4().hex[:8]}")


def test_the_lease_outlives_its_length_while_held_and_is_released_after(store: JobStore) -> None:
    assert store.acquire_lease("job", "0", "me", seconds=0.6)
    with trial_lease(store, "job", "0", "me", seconds=0.6) as lease:
        time.sleep(2.0)  # over three lease lengths without a word from the training thread
        assert store.lease_holder("job", "0") == "me" and not lease.lost
        assert not store.acquire_lease("job", "0", "someone else", seconds=10)
    assert store.lease_holder("job", "0") is None, "released on leaving"


def test_a_lease_taken_over_is_lost_and_left_to_its_new_owner(store: JobStore) -> None:
    assert store.acquire_lease("job", "1", "me", seconds=0.6)
    with trial_lease(store, "job", "1", "me", seconds=0.6) as lease:
        # What happens when this process froze past its lease and the sweeper gave the trial to another.
        store.release_lease("job", "1", "me")
        assert store.acquire_lease("job", "1", "new owner", seconds=10)
        wait_for(lambda: lease.lost, 2, "the keeper to notice")
    assert store.lease_holder("job", "1") == "new owner", "the new owner's lease is not released"
