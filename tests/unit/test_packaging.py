"""The distribution's own dependencies (pyproject.toml, without [dev]) cover everything the shipped code
imports, keras-tuner's optional imports for the oracles ktune runs included.

Derived, not listed: imports are read from the source, keras-tuner's optional ones from the modules of the
oracle classes in `worker.oracles`, and what pyproject's requirements bring from the installed packages'
metadata. `scripts/check-install` checks the same end to end, in an environment installed without [dev].
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import inspect
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from worker import oracles

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OWN = {"service", "worker"}


def _imported_modules(tree: ast.AST) -> Iterator[tuple[ast.AST, str]]:
    """(node, top-level module) of every absolute import in a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node, node.module.split(".")[0]


def _third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m not in OWN and m != "__future__"}


def shipped_imports() -> set[str]:
    """Top-level modules that service/ and worker/ import."""
    modules = set()
    for package in OWN:
        for path in (ROOT / package).rglob("*.py"):
            modules |= {module for _, module in _imported_modules(ast.parse(path.read_text()))}
    return _third_party(modules)


def optional_imports(source: str) -> set[str]:
    """Modules a keras-tuner module imports inside `try: ... except ImportError`, as it does for scipy."""
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            for statement in node.body:
                modules |= {module for _, module in _imported_modules(statement)}
    return _third_party(modules)


def oracle_optional_imports() -> set[str]:
    """keras-tuner's optional imports in the modules defining the oracles ktune runs (and their bases)."""
    classes = [c for c in vars(oracles).values() if inspect.isclass(c) and c.__module__ == oracles.__name__]
    bases = {base for cls in classes for base in cls.__mro__ if base.__module__.startswith("keras_tuner")}
    assert len(bases) >= 5, bases  # the four oracles and their base Oracle
    modules = set()
    for base in bases:
        modules |= optional_imports(inspect.getsource(sys.modules[base.__module__]))
    return modules


def distributions_of(modules: set[str]) -> dict[str, set[str]]:
    """Module -> the installed distributions providing it."""
    provided = metadata.packages_distributions()
    missing = modules - provided.keys()
    assert not missing, f"not installed in this environment: {sorted(missing)}"
    return {module: {canonicalize_name(d) for d in provided[module]} for module in modules}


def installed_closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements bring, extras and markers followed, transitively."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        for line in metadata.distribution(name).requires or []:
            dependency = Requirement(line)
            wanted = dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in {"", *requirement.extras}
            )
            if wanted:
                pending.append(dependency)
    return names


def test_the_dependencies_bring_every_module_the_shipped_code_imports() -> None:
    needed = distributions_of(shipped_imports())
    assert {"fastapi", "keras_tuner", "redis"} <= needed.keys()  # the scan finds imports at all
    brought = installed_closure(PYPROJECT["project"]["dependencies"])
    missing = {module: dists for module, dists in needed.items() if not dists & brought}
    assert not missing, f"imported but only installed by [dev] or by chance: {missing}"


def test_the_dependencies_bring_keras_tuners_optional_imports_for_our_oracles() -> None:
    optional = oracle_optional_imports()
    assert {"scipy", "sklearn"} <= optional  # BayesianOptimizationOracle's, which raises without them
    needed = distributions_of(optional)
    brought = installed_closure(PYPROJECT["project"]["dependencies"])
    missing = {module: dists for module, dists in needed.items() if not dists & brought}
    assert not missing, (
        f"an oracle the API accepts would raise ImportError when installed without [dev]: {missing}"
    )


def test_directly_imported_packages_are_declared() -> None:
    """A package the code imports is a declared requirement, not only a dependency of one."""
    declared = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    # kombu and billiard come with celery, which pins them to the versions it works with.
    with_celery = {"kombu", "billiard"}
    undeclared = {
        module: dists
        for module, dists in distributions_of(shipped_imports()).items()
        if not dists & declared and not dists <= with_celery
    }
    assert not undeclared, f"declare these in pyproject.toml's dependencies: {undeclared}"
