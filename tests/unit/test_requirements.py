"""scripts/requirements.py: the API image's dependency set is pyproject.toml's own requirements (ranges
written once), covers everything service/ imports (scikit-learn, imported lazily for the built-in data
sets, included), and brings no TensorFlow, keras or keras-tuner; the worker's set is every dependency,
TensorFlow's distribution swapped.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.test_packaging import PYPROJECT, ROOT, distributions_of, installed_closure

SCRIPT = ROOT / "scripts" / "requirements.py"
HEAVY = {"tensorflow", "keras", "keras-tuner"}  # never in the API's set (scripts/requirements.py)


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("requirements_script", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


requirements_script = _script()


def api_requirements() -> list[str]:
    lines: list[str] = requirements_script.requirements(PYPROJECT, "api")
    return lines


def _import_module_argument(node: ast.AST) -> str | None:
    """The module named by `importlib.import_module("...")` (how service/ imports scikit-learn), else None."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


# The Python client and the `ktune` command line ship in service/ but never run in the API process
# (tests/unit/test_import_boundaries.py): the API image need not install what they import (httpx, click).
CLIENT_SIDE = ("client", "cli")


def service_imports() -> set[str]:
    """Top-level third-party modules that service/ (the API process's code) imports, lazily or not."""
    modules = set()
    for path in (ROOT / "service").rglob("*.py"):
        if path.relative_to(ROOT / "service").parts[0] in CLIENT_SIDE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
            elif (name := _import_module_argument(node)) is not None:
                modules.add(name.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("service", "__future__")}


def test_the_api_set_is_pyprojects_requirements_verbatim() -> None:
    """The ranges are the ones pyproject.toml writes: one source of truth."""
    lines = api_requirements()
    names = {requirements_script.canonical(n) for n in PYPROJECT["tool"]["ktune"]["api-dependencies"]}
    assert len(lines) == len(names) >= 10
    assert set(lines) <= set(PYPROJECT["project"]["dependencies"])


def test_the_api_set_brings_every_module_service_imports() -> None:
    needed = distributions_of(service_imports())
    # The scan finds imports at all, and the lazy one: the built-in data sets' scikit-learn.
    assert {"fastapi", "redis", "celery", "pyarrow", "sklearn"} <= needed.keys()
    assert not needed.keys() & {"tensorflow", "keras", "keras_tuner", "worker"}
    brought = installed_closure(api_requirements())
    missing = {module: dists for module, dists in needed.items() if not dists & brought}
    assert not missing, f"add these to tool.ktune.api-dependencies in pyproject.toml: {missing}"


def test_the_api_set_brings_no_tensorflow_keras_nor_keras_tuner() -> None:
    brought = installed_closure(api_requirements())
    assert {"fastapi", "scikit-learn"} <= brought
    assert not brought & HEAVY, f"the API image would install {sorted(brought & HEAVY)}"
    # What the whole install brings, so the line above can fail.
    assert installed_closure(PYPROJECT["project"]["dependencies"]) >= HEAVY


def test_the_worker_set_is_every_dependency_with_the_tensorflow_asked_for() -> None:
    dependencies = PYPROJECT["project"]["dependencies"]
    assert requirements_script.requirements(PYPROJECT, "worker") == dependencies
    gpu = requirements_script.requirements(PYPROJECT, "worker", "tensorflow[and-cuda]")
    changed = [(old, new) for old, new in zip(dependencies, gpu, strict=True) if old != new]
    assert len(changed) == 1 and changed[0][1] == changed[0][0].replace(
        "tensorflow", "tensorflow[and-cuda]", 1
    )


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["fastapi", "keras-tuner"], "never imports"),
        (["fastapi", "Keras"], "never imports"),
        (["fastapi", "tensorflow"], "never imports"),
        (["fastapi", "flask"], "not in project.dependencies"),
    ],
)
def test_a_wrong_api_set_is_refused(names: list[str], message: str) -> None:
    pyproject = {**PYPROJECT, "tool": {"ktune": {"api-dependencies": names}}}
    with pytest.raises(ValueError, match=message):
        requirements_script.requirements(pyproject, "api")


def test_the_command_line_prints_one_requirement_a_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "api", "--pyproject", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert out.splitlines() == api_requirements()
