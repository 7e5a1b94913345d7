"""Prints the requirements an image target installs, one per line, from pyproject.toml:
`python requirements.py api` or `python requirements.py worker [--tf-package "tensorflow[and-cuda]"]`.

pyproject.toml is the one place version ranges are written: `api` is those `project.dependencies` named in
`tool.ktune.api-dependencies` (what `python -m service` needs), `worker` is all of them, with the
`tensorflow` requirement's name swapped for --tf-package (the GPU image's distribution) and its range kept.
Standard library only: the Dockerfile runs it before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

TARGETS = ("api", "worker")
# Never in the API's set: the API process does not import them (tests/unit/test_import_boundaries.py).
NOT_FOR_THE_API = frozenset({"tensorflow", "keras", "keras-tuner"})
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_TENSORFLOW = re.compile(r"^tensorflow(?![\w.-])")  # `tensorflow`, not `tensorflow-cpu` or similar


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical(match.group(1))


def requirements(pyproject: dict[str, object], target: str, tf_package: str = "tensorflow") -> list[str]:
    """The requirement lines of an image target. Raises ValueError when pyproject.toml contradicts itself."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    dependencies: list[str] = list(project["dependencies"])
    if target == "worker":
        if not any(_TENSORFLOW.match(dep) for dep in dependencies):
            raise ValueError("pyproject.toml has no `tensorflow` dependency for --tf-package to replace")
        return [_TENSORFLOW.sub(lambda _: tf_package, dep) for dep in dependencies]
    if target != "api":
        raise ValueError(f"no image target {target!r}; there are {', '.join(TARGETS)}")
    tool = pyproject.get("tool", {})
    assert isinstance(tool, dict)
    wanted = {canonical(name) for name in tool["ktune"]["api-dependencies"]}
    if forbidden := wanted & NOT_FOR_THE_API:
        raise ValueError(
            f"tool.ktune.api-dependencies names {sorted(forbidden)}, which the API never imports"
        )
    if unknown := wanted - {requirement_name(dep) for dep in dependencies}:
        raise ValueError(f"tool.ktune.api-dependencies names {sorted(unknown)}, not in project.dependencies")
    return [dep for dep in dependencies if requirement_name(dep) in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--tf-package", default="tensorflow", help="the worker's TensorFlow distribution")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    try:
        lines = requirements(tomllib.loads(args.pyproject.read_text()), args.target, args.tf_package)
    except ValueError as exc:
        parser.exit(2, f"requirements.py: {exc}\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
