"""Reading POST /v1/jobs bodies without stalling the event loop.

A small body is parsed in a thread (milliseconds). A large one, or one of unknown length, is read only
when one of `large_body_concurrency` slots is free (it waits up to `large_body_wait_seconds`, then the
request is a 503 with Retry-After), and parsed in a separate process: pydantic holds the GIL while it
validates, so a thread would still stall every other request for the seconds a maximal body takes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.message
import math
import multiprocessing
import os
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import anyio.to_thread
from fastapi import Request
from starlette.requests import ClientDisconnect

from service.api.job_parsing import ParsedJob, parse_job, parse_job_file
from service.core.errors import BadRequest, Busy, Unavailable, UnsupportedMediaType
from service.core.settings import Settings

# The route reads its body itself, so FastAPI is told what it takes (shown in /docs) this way.
OPENAPI_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}}},
    }
}


def check_content_type(value: str | None) -> None:
    """Raises UnsupportedMediaType unless the Content-Type is JSON (`application/json` or `...+json`)."""
    message = email.message.Message()
    message["content-type"] = value or ""
    subtype = message.get_content_subtype()
    json = subtype == "json" or subtype.endswith("+json")
    if value and message.get_content_maintype() == "application" and json:
        return
    raise UnsupportedMediaType(
        f"a job is JSON: send it with Content-Type: application/json (got {value or 'no Content-Type'})"
    )


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def _body(request: Request) -> bytearray:
    """The whole body, in one buffer grown in place (Starlette's `body()` holds it twice while joining)."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
        return body
    except ClientDisconnect:
        # No one reads the answer; a 400 keeps it out of the log of unexpected errors.
        raise BadRequest("the client hung up before sending the whole body", "body_incomplete") from None


_PARSE_NICENESS = 10


class JobBodies:
    """Parses job bodies: small ones in a thread, large ones in a pool of processes, a few at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots: asyncio.Semaphore | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    async def read(self, request: Request, fingerprint: bool = False) -> ParsedJob:
        """The request's job (with its fingerprint when asked). Raises UnsupportedMediaType, Busy, and
        `parse_job`'s errors."""
        check_content_type(request.headers.get("content-type"))
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else None
        # Over the body limit, the first read is a 413 (BodyLimitMiddleware): no need to wait for a slot.
        if (
            size is not None
            and not self.settings.large_body_bytes < size <= self.settings.limits.max_body_bytes
        ):
            return await self._parse_here(await _body(request), fingerprint)
        await self._take_slot()
        loop = asyncio.get_running_loop()
        submitted = False
        pool: ProcessPoolExecutor | None = None

        def submit(raw: bytearray) -> concurrent.futures.Future[ParsedJob]:
            # In a thread: writing the file releases the GIL, and the first call starts the fork server,
            # which takes a second.
            nonlocal submitted, pool
            descriptor, path = tempfile.mkstemp(prefix="ktune-job-body-", suffix=".json")
            try:
                with os.fdopen(descriptor, "wb") as file:
                    file.write(raw)
                pool = self._processes()
                try:
                    future = pool.submit(parse_job_file, path, self.settings.limits, fingerprint)
                except BrokenProcessPool:  # a parse process died since the last body: start afresh
                    self._discard(pool)
                    pool = self._processes()
                    future = pool.submit(parse_job_file, path, self.settings.limits, fingerprint)
            except BaseException:
                _remove(path)
                raise
            submitted = True

            def done(_: concurrent.futures.Future[ParsedJob]) -> None:
                # The slot is freed when the parse ends, not when this request does: a client that hangs
                # up cannot make room for more parses than there are slots.
                _remove(path)
                loop.call_soon_threadsafe(self._free_slot)

            future.add_done_callback(done)
            return future

        try:
            raw = await _body(request)
        except BaseException:
            self._free_slot()
            raise
        if len(raw) <= self.settings.large_body_bytes:
            self._free_slot()
            return await self._parse_here(raw, fingerprint)
        try:
            future = await anyio.to_thread.run_sync(submit, raw)
            del raw  # in the file now: the API does not hold large bodies while they are parsed
        except BaseException:
            if not submitted:
                self._free_slot()
            raise
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            assert pool is not None
            self._discard(pool)
            raise Unavailable(
                "the process parsing this body was lost (out of memory?); nothing was queued, try again",
                "parse_failed",
            ) from None

    async def _parse_here(self, raw: bytearray, fingerprint: bool) -> ParsedJob:
        return await anyio.to_thread.run_sync(parse_job, raw, self.settings.limits, fingerprint)

    async def _take_slot(self) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.large_body_concurrency)
        wait = self.settings.large_body_wait_seconds
        try:
            await asyncio.wait_for(self._slots.acquire(), wait)
        except TimeoutError:
            raise Busy(
                f"{self.settings.large_body_concurrency} large job bodies are being parsed and others "
                f"waited {wait:g} s before this one; try again shortly",
                retry_after_seconds=max(1, math.ceil(wait)),
            ) from None

    def _free_slot(self) -> None:
        assert self._slots is not None
        self._slots.release()

    def _processes(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # Not fork: the API process has threads (and an event loop) that a forked child would copy
                # mid-flight. The fork server imports the parser once; each process starts from it, at a
                # lower priority than the API's event loop, and parses one body: a process that parsed a
                # maximal body keeps hundreds of MB that only its exit gives back.
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["service.api.job_parsing"])
                self._pool = ProcessPoolExecutor(
                    self.settings.large_body_concurrency,
                    mp_context=context,
                    initializer=os.nice,
                    initargs=(_PARSE_NICENESS,),
                    max_tasks_per_child=1,
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Stop using a pool that lost a process (it takes no more work); the next body starts another."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the parse processes (after the parses under way)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
