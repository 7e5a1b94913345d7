"""API keys end to end: the API as `python -m service` starts it, keys made and revoked with
`python -m service keys` against the same Redis, no restart in between."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.api.app import create_app
from service.core.settings import Settings
from tests.integration.conftest import ROOT, Deployment, key_store, service_env_for

pytestmark = pytest.mark.integration


def _operations() -> list[tuple[str, str]]:
    """Every /v1 operation of the app (new routes are covered as they come), path ids filled with a uuid.

    Read from the app's OpenAPI paths: FastAPI nests included routers in `app.routes` in private types.
    """
    paths = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()["paths"]
    operations = [
        (method.upper(), re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path))
        for path, methods in paths.items()
        if path.startswith("/v1/")
        for method in methods
    ]
    assert len(operations) >= 12, operations
    return operations


OPERATIONS = _operations()


def keys_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "keys", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def keyed(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The API with auth on (the default), keys under a prefix of its own."""
    env = service_env_for(
        redis_url, tmp_path_factory.mktemp("keys-artifacts"), KTUNE_KEY_PREFIX=f"keys-{uuid.uuid4().hex[:8]}"
    )
    with Deployment.api_only(env, tmp_path_factory.mktemp("keys-logs")) as deployment:
        yield deployment


def assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 401, (response.request.method, response.request.url, response.text)
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == code


def call(deployment: Deployment, method: str, path: str, key: str | None) -> httpx.Response:
    # A fresh client: the deployment's own sends its key with every request.
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=deployment.client.base_url, timeout=30) as client:
        return client.request(method, path, headers=headers)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_v1_operation_needs_a_valid_key(keyed: Deployment, method: str, path: str) -> None:
    assert_refused(call(keyed, method, path, None), "unauthorized")
    assert_refused(call(keyed, method, path, "ktk_0123456789ab_" + "x" * 43), "invalid_api_key")
    assert_refused(call(keyed, method, path, "not a key at all"), "invalid_api_key")
    secret_swapped = keyed.api_key[:-3] + ("abc" if not keyed.api_key.endswith("abc") else "xyz")
    assert_refused(call(keyed, method, path, secret_swapped), "invalid_api_key")
    assert call(keyed, method, path, keyed.api_key).status_code != 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/docs", "/openapi.json"])
def test_health_docs_and_the_schema_need_no_key(keyed: Deployment, path: str) -> None:
    assert call(keyed, "GET", path, None).status_code in (200, 503)  # /readyz: 503 with no worker


def test_a_key_revoked_with_the_command_is_refused_at_once(keyed: Deployment) -> None:
    made = keys_command(keyed.env, "create", "revokable")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == key + "\n", "the key alone on stdout"
    assert call(keyed, "GET", "/v1/jobs", key).status_code == 200
    key_id = key.split("_")[1]

    revoked = keys_command(keyed.env, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert keyed.api_process is not None and keyed.api_process.poll() is None, "no restart"
    for method, path in OPERATIONS:
        assert_refused(call(keyed, method, path, key), "invalid_api_key")
    assert call(keyed, "GET", "/v1/jobs", keyed.api_key).status_code == 200, "other keys still work"

    again = keys_command(keyed.env, "revoke", key_id)
    assert again.returncode == 1 and "no key" in again.stderr


def test_keys_list_never_shows_a_secret_and_shows_last_use(keyed: Deployment) -> None:
    key = keys_command(keyed.env, "create", "lister").stdout.strip()
    key_id, secret = key.split("_")[1], key[len("ktk_") + 13 :]

    def listed_line() -> str:
        listing = keys_command(keyed.env, "list")
        assert listing.returncode == 0, listing.stderr
        assert secret not in listing.stdout + listing.stderr
        (line,) = [line for line in listing.stdout.splitlines() if line.startswith(key_id)]
        return line

    assert listed_line().split()[1:] == ["lister", listed_line().split()[2], "never"]
    assert call(keyed, "GET", "/v1/datasets", key).status_code == 200
    last_used = listed_line().split()[3]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", last_used), last_used

    only_theirs = keys_command(keyed.env, "list", "--tenant", "lister").stdout.splitlines()
    assert [line.split()[0] for line in only_theirs[1:]] == [key_id]


def test_a_bad_tenant_name_makes_no_key(keyed: Deployment) -> None:
    made = keys_command(keyed.env, "create", "Not A Tenant")
    assert made.returncode == 2 and made.stdout == ""
    assert "invalid tenant name" in made.stderr


def test_quota_overrides_set_with_the_command_are_what_the_store_reads(keyed: Deployment) -> None:
    set_ = keys_command(keyed.env, "quota", "quotaco", "--running-jobs", "2", "--artifact-bytes", "1000")
    assert set_.returncode == 0, set_.stderr
    assert key_store(keyed.env).quota_overrides("quotaco") == {"running_jobs": 2, "artifact_bytes": 1000}
    shown = keys_command(keyed.env, "quota", "quotaco").stdout
    assert re.search(r"running_jobs\s+2\s+\(this tenant's\)", shown), shown
    assert re.search(r"queued_jobs\s+.*KTUNE_QUOTA_QUEUED_JOBS", shown), shown
    assert keys_command(keyed.env, "quota", "quotaco", "--reset").returncode == 0
    assert key_store(keyed.env).quota_overrides("quotaco") == {}


def test_the_api_refuses_to_start_with_auth_off_on_a_public_address(redis_url: str, tmp_path: Path) -> None:
    env = service_env_for(redis_url, tmp_path / "artifacts", KTUNE_AUTH="off", KTUNE_HOST="0.0.0.0")
    started = subprocess.run(
        [sys.executable, "-m", "service"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode != 0
    assert "KTUNE_AUTH=off is allowed only while the API listens on a loopback address" in started.stderr
    assert "KTUNE_HOST=0.0.0.0" in started.stderr


def test_with_auth_off_on_loopback_no_key_is_needed(redis_url: str, tmp_path: Path) -> None:
    env = service_env_for(redis_url, tmp_path / "artifacts", KTUNE_AUTH="off")
    with Deployment.api_only(env, tmp_path) as deployment:
        assert call(deployment, "GET", "/v1/jobs", None).status_code == 200
        assert call(deployment, "GET", "/v1/datasets", "no key checked").status_code == 200
        log = (tmp_path / "api.log").read_text()
        assert "AUTHENTICATION IS OFF" in log
