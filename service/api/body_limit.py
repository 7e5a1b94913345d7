"""ASGI middleware that bounds a request body: 413 past the configured size, 408 past the time allowed."""

from __future__ import annotations

import asyncio

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"the request body is larger than this service's limit of {max_bytes} bytes")


def _too_slow(timeout_seconds: float) -> HTTPException:
    # Closing the connection is the only way to stop a client still sending the rest of the body.
    return HTTPException(
        408,
        f"the request body did not arrive within this service's limit of {timeout_seconds:g} seconds",
        headers={"Connection": "close"},
    )


class BodyLimitMiddleware:
    """Checks Content-Length up front and counts streamed bytes, so chunked bodies are bounded too; and
    gives the whole body `timeout_seconds` from the app's first read, so a client that trickles it (or
    stops sending) cannot hold a connection and its buffer open.

    The errors are raised as HTTPExceptions from `receive`, which FastAPI passes on to the app's handler.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_seconds: float = 60.0,
        larger: dict[str, tuple[int, float]] | None = None,
    ) -> None:
        """`larger`: other bounds (bytes, seconds) for the bodies of some paths (uploads)."""
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, timeout_seconds = self.larger.get(
            scope.get("path", "").rstrip("/"), (self.max_bytes, self.timeout_seconds)
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > max_bytes
        received = 0
        deadline: float | None = None
        complete = False
        loop = asyncio.get_running_loop()

        async def limited_receive() -> Message:
            nonlocal received, deadline, complete
            if too_large:
                raise _too_large(max_bytes)
            if complete:  # later reads wait for a disconnect, which may take as long as the response
                return await receive()
            if deadline is None:
                deadline = loop.time() + timeout_seconds
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise _too_slow(timeout_seconds) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _too_large(max_bytes)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, limited_receive, send)
