"""What each side may import: the API never loads TensorFlow; Celery's parent process never does either."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "keras", "keras_tuner")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
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


def test_shared_core_needs_neither_fastapi_nor_tensorflow() -> None:
    modules = (
        "spec, params, catalog, settings, store, records, lifecycle, artifacts, queue, states, errors, "
        "heartbeats, data_codec"
    )
    loaded = loaded_after(f"from service.core import {modules}")
    assert not loaded & {*HEAVY, "fastapi", "starlette"}
