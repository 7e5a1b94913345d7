"""Unit tests' apps answer Starlette's TestClient, which sends `Host: testserver`.

Set before any test module builds its Settings (some do at import); a test of the trusted-host check
passes its own `trusted_hosts`. Integration tests start the API with their own environment (127.0.0.1, one
of the defaults).
"""

from __future__ import annotations

import os

from service.core.settings import LOCAL_HOSTS

os.environ["KTUNE_TRUSTED_HOSTS"] = ",".join(["testserver", *LOCAL_HOSTS])
