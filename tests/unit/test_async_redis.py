"""The API's asyncio Redis client (`service.api.async_redis`): one per event loop, made on first use, and
closed with the app. No server is needed: a client connects only when it sends a command."""

from __future__ import annotations

import asyncio
from typing import Any

from service.api.async_redis import AsyncRedis
from service.core.store import CLIENT_OPTIONS

URL = "redis://:secret@127.0.0.1:1/3"


def test_a_loop_keeps_its_client_and_another_loop_gets_its_own() -> None:
    clients = AsyncRedis(URL)

    async def twice() -> tuple[Any, Any]:
        return clients.client(), clients.client()

    first, again = asyncio.run(twice())
    assert first is again
    other, _ = asyncio.run(twice())
    assert other is not first, "a client's connections belong to the loop that opened them"


def test_the_client_has_the_store_clients_settings() -> None:
    async def kwargs() -> dict[str, Any]:
        return dict(AsyncRedis(URL).client().connection_pool.connection_kwargs)

    made = asyncio.run(kwargs())
    assert (made["host"], made["port"], made["db"], made["password"]) == ("127.0.0.1", 1, 3, "secret")
    assert made["decode_responses"] is True
    for name, value in CLIENT_OPTIONS.items():
        assert made[name] == value, name


def test_close_closes_the_loops_client_and_a_later_use_makes_a_new_one() -> None:
    clients = AsyncRedis(URL)

    async def use_and_close() -> tuple[Any, Any]:
        client = clients.client()
        await clients.close()
        return client, clients.client()

    closed, fresh = asyncio.run(use_and_close())
    assert fresh is not closed
    asyncio.run(clients.close())  # from another loop: forgets the client it cannot close
    asyncio.run(AsyncRedis(URL).close())  # never used: nothing to close
