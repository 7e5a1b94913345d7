"""The API's asyncio client of the store's Redis: the hot reads (`routes_jobs.hot_reads`) and event streams
(`event_reader`) use it from the event loop, without a worker thread each."""

from __future__ import annotations

import asyncio
from typing import Any

from service.core.store import async_client


class AsyncRedis:
    """An asyncio client of the store's Redis (`store.async_client`: its URL, password and timeouts).

    Made with the app, it connects on first use and is closed when the app stops (its lifespan). A client's
    connections belong to the event loop that opened them, so a request served on another loop (a test
    client that runs each request on a loop of its own) gets a client of its own rather than a
    RuntimeError; a server has one loop, so one client.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> Any:
        """The client of the running event loop (typed loosely as the store's sync client is: redis-py's
        stubs mix sync and async replies)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._client, self._loop = async_client(self.url), loop
        return self._client

    async def close(self) -> None:
        """Close the client of the running loop, if it made one (the app's lifespan calls this)."""
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client, self._loop = None, None
