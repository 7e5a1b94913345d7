"""What every part of the store shares (`service.core.store_base`), against a real Redis server: the reads
of one round trip, sync and through an asyncio client (the API's hot reads), and their recovery when Redis
has lost its scripts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from service.core.store import JobStore
from service.core.store_base import call_script_async
from tests.integration.store_records import run_async, stored_job

pytestmark = pytest.mark.integration


def _page(store: JobStore, tenant: str) -> Callable[[Any], object]:
    return lambda pipe: store.queue_job_page(pipe, tenant, None, 10, None)


def test_an_async_read_answers_as_the_sync_read_in_one_round_trip(
    scratch_store: JobStore, redis_url: str
) -> None:
    job_id = stored_job(scratch_store, "acme")

    def reads(pipe: Any) -> None:
        scratch_store.queue_job_views(pipe, [job_id])
        scratch_store.queue_job_page(pipe, "acme", None, 10, None)

    replies = run_async(redis_url, lambda client: scratch_store.read_async(client, reads))
    assert replies == scratch_store.read(reads)
    [job] = scratch_store.stored_jobs_from([job_id], replies[:3])
    assert job is not None and job.id == job_id and job.tenant == "acme"
    jobs, cursor = scratch_store.stored_page_from(replies[3], 10)
    assert [j.id for j in jobs] == [job_id] and cursor is None


def test_an_async_read_loads_the_read_scripts_again_after_redis_lost_them(
    scratch_store: JobStore, redis_url: str
) -> None:
    job_id = stored_job(scratch_store, "acme")

    async def read_twice(client: Any) -> list[Any]:
        [before] = await scratch_store.read_async(client, _page(scratch_store, "acme"))
        await client.script_flush()  # as after a restart of a Redis that keeps no scripts
        assert not (await client.script_exists(scratch_store._page.sha))[0], "the flush is real"
        [after] = await scratch_store.read_async(client, _page(scratch_store, "acme"))
        assert after == before
        return list(after)

    reply = run_async(redis_url, read_twice)
    assert [job.id for job in scratch_store.stored_page_from(reply, 10)[0]] == [job_id]


def test_an_async_read_raises_what_is_not_a_lost_script(scratch_store: JobStore, redis_url: str) -> None:
    def wrong_type(pipe: Any) -> None:
        pipe.hgetall(scratch_store.keys.jobs())  # a sorted set, not a hash

    stored_job(scratch_store, "acme")
    with pytest.raises(redis.ResponseError, match="HGETALL"):
        run_async(redis_url, lambda client: scratch_store.read_async(client, wrong_type))


def test_a_script_called_through_an_asyncio_client_is_loaded_again_after_a_flush(
    scratch_store: JobStore, redis_url: str
) -> None:
    job_id = stored_job(scratch_store, "acme")
    script = scratch_store._set_if_exists  # sets fields of a job that exists

    async def set_twice(client: Any) -> None:
        await client.script_flush()
        assert await call_script_async(client, script, [scratch_store.keys.job(job_id)], ["nudges", "3"]) == 1
        await client.script_flush()
        assert await call_script_async(client, script, [scratch_store.keys.job(job_id)], ["nudges", "4"]) == 1

    run_async(redis_url, set_twice)
    assert scratch_store.redis.hget(scratch_store.keys.job(job_id), "nudges") == "4"
