"""Who is calling: every /v1 route depends on `authenticate`, which names the caller's tenant.

With KTUNE_AUTH=off (allowed only on a loopback address) every caller is the tenant `local`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

LOCAL_TENANT = "local"


@dataclass(frozen=True)
class Caller:
    """The tenant a request acts for, and the id of the API key it presented (None with auth off)."""

    tenant: str
    key_id: str | None


def authenticate(request: Request) -> Caller:
    """The caller of a /v1 request."""
    # The keyed check (Authorization: Bearer, 401) is being built beside this; until then auth is off.
    del request
    return Caller(LOCAL_TENANT, None)


CallerDep = Annotated[Caller, Depends(authenticate)]
