"""The API as its image installs it: a fresh virtual environment with only the API's dependency set
(scripts/requirements.py api, from PyPI) and the project with --no-deps, as the Dockerfile's `api` target
does. It starts, answers /healthz and /readyz, accepts jobs (no worker needed) and lists the built-in data
sets, with no TensorFlow, keras or keras-tuner installed, let alone loaded. scikit-learn is installed (the
built-in sets ship inside it) and loaded only once a built-in set is used.

Needs PyPI (or the index pip is configured for); downloads go through pip's own cache (PIP_CACHE_DIR, by
default ~/.cache/pip), so a second run, or a CI machine that keeps that directory, downloads nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration.conftest import ROOT, Deployment, service_env_for

pytestmark = pytest.mark.integration

ABSENT = ("tensorflow", "keras", "keras_tuner")
INSTALL_TIMEOUT = 900  # seconds: a cold cache downloads pyarrow and numpy


def _run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert done.returncode == 0, f"{command[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def api_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a new environment installed as the Dockerfile's `api` target installs its image."""
    scratch = tmp_path_factory.mktemp("api-image")
    _run([sys.executable, "-m", "venv", str(scratch / "venv")], scratch)
    python = scratch / "venv" / "bin" / "python"
    requirements = scratch / "requirements.txt"
    requirements.write_text(
        _run(
            [
                str(python),
                str(ROOT / "scripts" / "requirements.py"),
                "api",
                "--pyproject",
                str(ROOT / "pyproject.toml"),
            ],
            scratch,
        )
    )
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "-r", str(requirements)], scratch)
    _run([*pip, "--no-deps", str(ROOT)], scratch)
    return python


@pytest.fixture(scope="module")
def api_image(
    api_python: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    scratch = tmp_path_factory.mktemp("api-image-run")
    env = service_env_for(
        redis_url, scratch / "artifacts", KTUNE_KEY_PREFIX=f"apiimage-{uuid.uuid4().hex[:8]}"
    )
    env.pop("PYTHONPATH", None)  # only what the environment installed
    with Deployment.api_only(env, scratch, python=str(api_python), cwd=scratch) as deployment:
        yield deployment


def _specs(python: Path, modules: tuple[str, ...], cwd: Path) -> dict[str, str | None]:
    code = (
        "import importlib.util, json, sys\n"
        "specs = {m: importlib.util.find_spec(m) for m in sys.argv[1:]}\n"
        "print(json.dumps({m: s.origin if s else None for m, s in specs.items()}))"
    )
    return dict(json.loads(_run([str(python), "-c", code, *modules], cwd)))


def test_the_environment_has_the_api_and_no_tensorflow(api_python: Path, tmp_path: Path) -> None:
    present = ("service", "fastapi", "pyarrow", "sklearn")
    specs = _specs(api_python, (*present, *ABSENT), tmp_path)
    venv = str(api_python.parents[1])
    # The installed project, not the source tree; the API's dependencies: the check can tell "installed".
    assert all(str(specs[m]).startswith(venv) for m in present), specs
    assert {m: specs[m] for m in ABSENT} == dict.fromkeys(ABSENT), "the API's set installed these"


def test_the_api_answers_and_accepts_a_job(api_image: Deployment) -> None:
    client = api_image.client
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text  # no worker consumes a queue; Redis itself is fine
    assert ready.json()["checks"]["redis"] == "ok"
    body = json.loads((ROOT / "examples" / "xor-seed.json").read_text())
    created = client.post("/v1/jobs", json=body)
    assert created.status_code == 202, created.text
    assert client.get(f"/v1/jobs/{created.json()['id']}").json()["status"] == "queued"
    builtin = client.post("/v1/jobs", json={**body, "data": {"dataset": "iris", "target": "target"}})
    assert builtin.status_code == 202, builtin.text


def test_the_builtin_sets_are_listed(api_image: Deployment) -> None:
    listed = api_image.client.get("/v1/datasets")
    assert listed.status_code == 200, listed.text
    names = {item["id"] for item in listed.json()["items"] if item["builtin"]}
    assert names == {"iris", "wine", "breast_cancer", "digits", "diabetes"}


def test_the_running_api_has_loaded_none_of_them(api_image: Deployment) -> None:
    """After the requests above: no file of TensorFlow, keras or keras-tuner is mapped into the API process
    (scikit-learn's are, since the built-in sets were used: the check can tell "loaded")."""
    api_image.client.get("/v1/datasets")
    assert api_image.api_process is not None
    mapped = {m.path for m in psutil.Process(api_image.api_process.pid).memory_maps()}
    assert any("/pyarrow/" in path for path in mapped)  # it does see the native libraries it loads
    assert any("/sklearn/" in path for path in mapped)  # and a lazily imported package's
    loaded = {name for name in ABSENT for path in mapped if f"/{name}/" in path}
    assert not loaded, f"the API process loaded {sorted(loaded)}"


def test_the_installed_api_serves_its_docs_and_metrics(api_image: Deployment) -> None:
    """Installed without the checkout's examples/, the document has none but is whole; /docs' assets come
    from the installed fastapi-offline; /metrics from the installed prometheus-client."""
    client = api_image.client
    document = client.get("/openapi.json").json()
    create = document["paths"]["/v1/jobs"]["post"]
    assert "examples" not in create["requestBody"]["content"]["application/json"]
    assert create["summary"] == "Submit a tuning job"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/redoc.standalone.js").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and 'ktune_jobs{status="queued"}' in metrics.text
