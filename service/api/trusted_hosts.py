"""Requests whose Host header names no trusted host are refused with ktune's error body.

Starlette's TrustedHostMiddleware makes the decision (its Host parsing is the one CVE-2026-48710 was fixed
in, so it is not written again here); only its plain-text refusal is replaced by the documented body.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.core.errors import shorten

_ADMITTED = "ktune.host_admitted"


class TrustedHosts(TrustedHostMiddleware):
    """Starlette's TrustedHostMiddleware without its www-redirect, refusing with a 400 `invalid_host`."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        super().__init__(app, allowed_hosts, www_redirect=False)
        inner = self.app

        async def admitted(scope: Scope, receive: Receive, send: Send) -> None:
            scope[_ADMITTED] = True  # the scope dict the middleware was called with
            await inner(scope, receive, send)

        self.app = admitted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return

        async def send_or_refuse(message: Message) -> None:
            if scope.get(_ADMITTED):
                await send(message)
            elif message["type"] == "http.response.start":
                # Starlette's own refusal: what follows is its plain-text body, which is dropped.
                await self._refusal(scope)(scope, receive, send)

        await super().__call__(scope, receive, send_or_refuse)

    @staticmethod
    def _refusal(scope: Scope) -> ASGIApp:
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        named = "no Host header" if host is None else f"the host '{shorten(host, 100)}'"
        return error_response(
            400,
            "invalid_host",
            f"this service does not answer to {named}; its operator lists the names it answers to "
            "in KTUNE_TRUSTED_HOSTS",
        )
