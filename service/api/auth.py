"""Who is calling: every /v1 route depends on `authenticate`, which names the caller's tenant from the API key
sent as `Authorization: Bearer <key>` (keys are made with `python -m service keys create TENANT`).

With KTUNE_AUTH=off (allowed only on a loopback address: `check_auth_setting`) every caller is the tenant
`local`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from service.api.schemas import ErrorBody
from service.core.api_keys import ApiKeyStore
from service.core.errors import Unauthorized
from service.core.records import LEGACY_TENANT
from service.core.settings import Settings
from service.core.store import JobStore

log = logging.getLogger(__name__)

LOCAL_TENANT = LEGACY_TENANT

# Reads the header and declares the scheme in the OpenAPI schema (every operation that depends on
# `authenticate` is marked with it); ktune's own check below answers every failure with its 401 body.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    bearerFormat="ktk_<key_id>_<secret>",
    description="an API key: `python -m service keys create TENANT` prints one",
)

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorBody,
        "description": "no API key (`unauthorized`), or one that is unknown or revoked (`invalid_api_key`)",
        "headers": {
            "WWW-Authenticate": {"description": "`Bearer`: send an API key", "schema": {"type": "string"}}
        },
    }
}
"""The 401 every operation that needs a key may answer: a router's `responses`."""


@dataclass(frozen=True)
class Caller:
    """The tenant a request acts for, and the id of the API key it presented (None with auth off)."""

    tenant: str
    key_id: str | None


async def presented_key(
    request: Request, _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str | None:
    """The API key a /v1 request presents (`key_presented`). `_scheme` only marks the operation with the
    bearer scheme in the OpenAPI schema. `async def`: it only reads the request, so it needs no worker
    thread."""
    return key_presented(request)


def key_presented(request: Request) -> str | None:
    """The API key a /v1 request presents as `Authorization: Bearer <key>` (read as `bearer` reads it), not
    yet checked; None with auth off. Raises Unauthorized when it presents none."""
    settings: Settings = request.app.state.settings
    if settings.auth == "off":
        return None
    header = request.headers.get("authorization")
    scheme, credentials = get_authorization_scheme_param(header)
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if header is not None:
        raise Unauthorized("the Authorization header must read `Bearer <API key>`")
    raise Unauthorized(
        "this request needs an API key, sent as `Authorization: Bearer <key>` "
        "(`python -m service keys create TENANT` makes one)"
    )


KEYED_OPERATION: dict[str, Any] = {"security": [{bearer.scheme_name: []}]}
"""The `openapi_extra` of a route that reads the key with `key_presented` rather than depending on
`presented_key`: the same mark in the OpenAPI schema."""


PresentedKeyDep = Annotated[str | None, Depends(presented_key)]


def authenticate(request: Request, key: PresentedKeyDep) -> Caller:
    """The caller of a /v1 request; raises Unauthorized without a valid key (unless auth is off)."""
    if key is None:
        return Caller(LOCAL_TENANT, None)
    caller, _ = authenticate_with(request, key, lambda pipe: None)
    return caller


def authenticate_with(
    request: Request, key: str | None, reads: Callable[[Any], object]
) -> tuple[Caller, list[Any]]:
    """The caller (as `authenticate`) and the replies of the reads `reads` queues on a pipeline, in one
    round trip: the key is checked in the same pipeline, and nothing read is returned unless it is valid.
    The hot reads (a job, a page of jobs) save a round trip this way. Raises Unauthorized."""
    if key is None:
        store: JobStore = request.app.state.store
        return Caller(LOCAL_TENANT, None), store.read(reads)
    keys: ApiKeyStore = request.app.state.api_keys
    found, replies = keys.verify_with(key, reads)
    if found is None:
        raise _invalid_key()
    return Caller(found.tenant, found.key_id), replies


def _invalid_key() -> Unauthorized:
    return Unauthorized("the API key is not valid: it is unknown or has been revoked", "invalid_api_key")


CallerDep = Annotated[Caller, Depends(authenticate)]


class UnsafeAuthSetting(Exception):
    """KTUNE_AUTH=off while the API would listen on an address other machines can reach."""


def is_loopback(host: str) -> bool:
    """Whether `host` (KTUNE_HOST) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth_setting(settings: Settings) -> None:
    """Refuse KTUNE_AUTH=off unless the API listens on a loopback address (raises UnsafeAuthSetting), and
    say loudly that it is off."""
    if settings.auth == "on":
        return
    if not is_loopback(settings.host):
        raise UnsafeAuthSetting(
            f"KTUNE_AUTH=off is allowed only while the API listens on a loopback address (127.0.0.1, ::1 or "
            f"localhost), not on KTUNE_HOST={settings.host}: anyone who reaches it could use it. Leave "
            "KTUNE_AUTH on and give clients API keys (`python -m service keys create TENANT`)."
        )
    log.warning(
        "AUTHENTICATION IS OFF (KTUNE_AUTH=off): every request to /v1 is served, without an API key, as "
        "the tenant '%s'. Allowed because the API listens on %s only.",
        LOCAL_TENANT,
        settings.host,
    )
