"""A module the API loads on first use (`service.core.lazy_imports`) that cannot be imported is a typed 503
naming it and the fix, never a 500; a process that lacks one refuses to start, as when it was imported at
start. Each case runs in a fresh process where the module is made unimportable (None in sys.modules)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.core.lazy_imports import DEFERRED, MissingModule, missing, needed_for

ROOT = Path(__file__).resolve().parents[2]

APP = (
    "import json, sys\n"
    "from fastapi.testclient import TestClient\n"
    "from service.api.app import create_app\n"
    "from service.core.settings import Settings\n"
    "app = create_app(Settings(redis_url='redis://127.0.0.1:1/0', auth='off'))\n"
)


def answer_without(module: str, request_line: str) -> tuple[int, dict[str, object]]:
    """The status and JSON body of one request to an app made while `module` was there, sent after it is
    gone."""
    code = (
        APP + f"sys.modules[{module!r}] = None\n"
        "client = TestClient(app, base_url='http://localhost', raise_server_exceptions=False)\n"
        f"response = {request_line}\n"
        "print(json.dumps([response.status_code, response.json()]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    status, body = json.loads(done.stdout.strip().splitlines()[-1])
    return status, body


@pytest.mark.parametrize(
    ("module", "request_line", "purpose"),
    [
        (
            "numpy",
            "client.post('/v1/jobs/validate', json=json.load(open('examples/xor-seed.json')))",
            "read a job body",
        ),
        ("pyarrow", "client.get('/v1/datasets/iris')", "read a built-in data set"),
        ("prometheus_client", "client.get('/metrics')", "serve /metrics"),
    ],
)
def test_a_missing_module_is_a_503_naming_it(module: str, request_line: str, purpose: str) -> None:
    status, body = answer_without(module, request_line)
    assert status == 503, body
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == "missing_module"
    assert f"cannot {purpose}: the Python module '{module}'" in error["message"]
    assert "pip install ." in error["message"]


def test_the_queue_without_celery_is_a_missing_module() -> None:
    code = (
        "import sys\nsys.modules['celery'] = None\n"
        "from service.core.lazy_imports import MissingModule\n"
        "from service.core.queue import make_celery\nfrom service.core.settings import Settings\n"
        "try:\n    make_celery(Settings())\n"
        "except MissingModule as exc:\n    print(exc.module, exc.status_code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.split() == ["celery", "503"]


@pytest.mark.parametrize("module", DEFERRED)
def test_the_api_refuses_to_start_without_one(module: str, tmp_path: Path) -> None:
    """`python -m service` exits 2 saying which, before it listens."""
    code = f"import sys\nsys.modules[{module!r}] = None\nfrom service.__main__ import main\nmain([])\n"
    env = {"PATH": "/usr/bin:/bin", "KTUNE_REDIS_URL": "redis://127.0.0.1:1/0", "KTUNE_PORT": "1"}
    env["KTUNE_ARTIFACT_DIR"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"refusing to start: this API cannot start: the Python module '{module}'" in done.stderr


def test_missing_finds_without_importing() -> None:
    assert missing(("json", "no_such_module_ktune")) == ["no_such_module_ktune"]


def test_needed_for_names_the_module_that_failed() -> None:
    with pytest.raises(MissingModule) as raised, needed_for("do a thing"):
        import no_such_module_ktune  # type: ignore[import-not-found]  # noqa: F401
    assert raised.value.module == "no_such_module_ktune"
    assert raised.value.status_code == 503 and raised.value.code == "missing_module"


def test_a_module_imported_already_is_not_missing_even_without_a_spec() -> None:
    """kombu swaps its package for a module object whose __spec__ is None (find_spec raises ValueError)."""
    import kombu.utils.url  # noqa: F401

    assert missing(("kombu",)) == []
