"""Follows a job's event stream (`service.core.events`) for GET /v1/jobs/{id}/events: the stored events,
then live ones, until the job's terminal status; any API replica can serve it (the stream is in Redis)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from service.api.async_redis import AsyncRedis
from service.api.sse import KEEP_ALIVE, format_event
from service.core.events import JOB_STATUS
from service.core.settings import Settings
from service.core.states import JobStatus
from service.core.store import JobStore

_BATCH = 500
# A blocked read lasts at most this long, so a stream notices the server shutting down within about it.
_SLICE_SECONDS = 1.0


class EventReader:
    """Reads event streams with the API's asyncio Redis client (a blocked read holds a connection of its
    own, not a thread)."""

    def __init__(self, settings: Settings, store: JobStore, clients: AsyncRedis) -> None:
        self.store = store
        self.clients = clients
        self.keepalive_seconds = settings.events_keepalive_seconds
        self.stopping = False  # set when the server shuts down: open streams end, clients reconnect elsewhere

    def stop(self) -> None:
        """End every open stream within about a second (the server is shutting down)."""
        self.stopping = True

    async def follow(self, job_id: str, after: str | None) -> AsyncIterator[str]:
        """SSE text of the job's events after the entry `after` (None: from the first), a keep-alive
        comment after each idle `keepalive_seconds`; ends after the terminal job.status event, or when the
        job has ended or is gone and no event is left to send."""
        client = self.clients.client()
        key = self.store.keys.job_events(job_id)
        last = after or "0-0"
        block: int | None = None  # the first read answers at once: a finished job's stream just replays
        idle = 0.0
        while not self.stopping:
            reply = await client.xread({key: last}, count=_BATCH, block=block)
            if reply:
                idle = 0.0
                for entry_id, fields in reply[0][1]:
                    last = entry_id
                    yield format_event(entry_id, fields.get("type", ""), fields.get("data", "{}"))
                    if _is_terminal(fields):
                        return
                continue
            if block is not None:
                idle += _SLICE_SECONDS
                if idle < self.keepalive_seconds:
                    continue
                idle = 0.0
                yield KEEP_ALIVE
            block = int(min(_SLICE_SECONDS, self.keepalive_seconds) * 1000)
            status = await client.hget(self.store.keys.job(job_id), "status")
            if status is None or JobStatus(status).is_final():
                # Its terminal event was written with the status: whatever is left ends the stream.
                reply = await client.xread({key: last}, count=_BATCH)
                for entry_id, fields in reply[0][1] if reply else []:
                    yield format_event(entry_id, fields.get("type", ""), fields.get("data", "{}"))
                    if _is_terminal(fields):
                        return
                return


def _is_terminal(fields: dict[str, str]) -> bool:
    if fields.get("type") != JOB_STATUS:
        return False
    try:
        return JobStatus(json.loads(fields.get("data", "{}")).get("status")).is_final()
    except ValueError:
        return False
