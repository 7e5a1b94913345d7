"""What each side may import: the API never loads TensorFlow; Celery's parent process never does either.

The data-set modules load scikit-learn only once a built-in set is asked for: creating the app and importing
every module of service/ load neither it nor TensorFlow, keras or keras-tuner.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.core.lazy_imports import DEFERRED

HEAVY = ("tensorflow", "keras", "keras_tuner")
ROOT = Path(__file__).resolve().parents[2]


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    [
        "from service.api.app import create_app; create_app()",
        "import worker.app, worker.tasks, worker.__main__",  # what the prefork parent imports
        "import worker.health",  # a container's health check, run every half minute
    ],
)
def test_no_tensorflow(statement: str) -> None:
    assert not loaded_after(statement) & set(HEAVY)


def test_no_service_module_nor_the_app_loads_tensorflow_or_scikit_learn() -> None:
    """Every module of service/ imported, the app created, a job body validated: the API image installs no
    TensorFlow, keras or keras-tuner, and scikit-learn waits for the first use of a built-in set."""
    statement = (
        "import json, pkgutil, importlib, service\n"
        "for m in pkgutil.walk_packages(service.__path__, 'service.'): importlib.import_module(m.name)\n"
        "from service.api.app import create_app; create_app()\n"
        "from service.core.spec import JobCreate\n"
        "JobCreate.model_validate(json.load(open('examples/xor-seed.json')))"
    )
    loaded = loaded_after(statement)
    assert {"fastapi", "pyarrow", "service"} <= loaded  # the statement ran
    assert not loaded & {*HEAVY, "sklearn", "scipy"}


# What `python -m service` imports and does before it serves (its lifespan included), then a liveness
# probe and a job read (a 503 here: no Redis).
STARTED = (
    "import json, service.__main__, uvicorn\n"
    "from fastapi.testclient import TestClient\n"
    "from service.api.app import create_app\n"
    "from service.core.settings import Settings\n"
    "app = create_app(Settings(redis_url='redis://127.0.0.1:1/0', auth='off', warm_imports_seconds=-1))\n"
    "with TestClient(app, base_url='http://localhost') as client:\n"
    "    assert client.get('/healthz').status_code == 200\n"
    "    assert client.get('/v1/jobs/0b7c5a52-2f0d-4c53-9a53-6c3f6f0e7a11').status_code == 503\n"
)


def test_starting_the_api_loads_none_of_the_modules_it_defers() -> None:
    """numpy, pyarrow, Celery, kombu and prometheus_client wait for the requests that need them
    (`service.core.lazy_imports`): a replica answers /healthz in well under a second. Requests are timed
    (the latency middleware ran for both) without prometheus_client."""
    loaded = loaded_after(STARTED)
    assert {"fastapi", "uvicorn", "service"} <= loaded  # the statement ran
    assert not loaded & set(DEFERRED)


def test_a_serving_api_loads_them_in_the_background_before_the_first_job() -> None:
    """So the first job costs what later ones do (`KTUNE_WARM_IMPORTS_SECONDS`)."""
    warmed = STARTED.replace("warm_imports_seconds=-1", "warm_imports_seconds=0") + (
        "    import sys, time\n"
        "    deadline = time.monotonic() + 60\n"
        "    while not {'numpy', 'pyarrow', 'celery', 'kombu', 'prometheus_client'} <= sys.modules.keys():\n"
        "        assert time.monotonic() < deadline, 'not loaded in the background'\n"
        "        time.sleep(0.05)\n"
    )
    assert set(DEFERRED) <= loaded_after(warmed)


@pytest.mark.parametrize(
    ("request_line", "module"),
    [
        ("client.get('/metrics')", "prometheus_client"),  # 503 without Redis, after loading it
        ("client.post('/v1/jobs/validate', json=json.load(open('examples/xor-seed.json')))", "numpy"),
        ("client.get('/v1/datasets/iris')", "pyarrow"),
        ("from service.core.queue import get_celery; get_celery()", "kombu"),
    ],
)
def test_the_requests_that_need_a_deferred_module_load_it(request_line: str, module: str) -> None:
    """The other side of the test above: its absence there means laziness, not a module no longer used."""
    assert module in loaded_after(STARTED + f"    {request_line}\n")


def test_shared_core_needs_neither_fastapi_nor_tensorflow() -> None:
    modules = (
        "spec, params, catalog, settings, store, records, lifecycle, artifacts, queue, states, errors, "
        "heartbeats, data_codec"
    )
    loaded = loaded_after(f"from service.core import {modules}")
    assert not loaded & {*HEAVY, "fastapi", "starlette"}


def test_boto3_is_loaded_only_for_s3_artifacts() -> None:
    """The filesystem default starts without it (a second of imports); an s3:// URL needs it."""
    start = "from service.api.app import create_app; from service.core.settings import Settings; "
    assert "boto3" not in loaded_after(start + "create_app(Settings(auth='off'))")
    assert "boto3" in loaded_after(start + "create_app(Settings(auth='off', artifact_url='s3://bucket/x'))")


@pytest.mark.parametrize(
    "module", ["datasets", "dataset_models", "dataset_readers", "dataset_writer", "builtin_datasets"]
)
def test_the_dataset_modules_load_neither_scikit_learn_nor_tensorflow_nor_fastapi(module: str) -> None:
    loaded = loaded_after(f"import service.core.{module}")
    assert not loaded & {"sklearn", "tensorflow", "keras", "fastapi", "redis", "pandas"}


@pytest.mark.parametrize("function", ["builtin_table", "builtin_info"])
def test_scikit_learn_and_no_tensorflow_once_a_builtin_set_is_asked_for(function: str) -> None:
    """What GET /v1/datasets and a job on a built-in set do. The other side of the tests above: the
    built-ins do need scikit-learn, so its absence there means laziness."""
    loaded = loaded_after(f"from service.core.datasets import {function}; {function}('digits')")
    assert "sklearn" in loaded
    assert not loaded & set(HEAVY)


def test_the_client_and_the_command_line_load_no_tensorflow_nor_the_server_stack() -> None:
    """A notebook or another service imports the client without TensorFlow, FastAPI or Celery."""
    loaded = loaded_after("import service.client, service.cli.commands")
    assert {"httpx", "click", "pydantic"} <= loaded  # the statement ran
    assert not loaded & {*HEAVY, "sklearn", "fastapi", "celery"}


def test_the_api_process_imports_neither_the_client_nor_httpx() -> None:
    """So the API image installs no httpx (pyproject's api-dependencies leave it out)."""
    code = (
        "import sys\nfrom service.api.app import create_app; create_app()\n"
        "import service.__main__\n"
        "print(sorted(m for m in sys.modules if m.startswith(('service.client', 'service.cli', 'httpx'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"
