"""Modules the API loads on first use, not at start, so that a replica answers /healthz in well under a
second: numpy and pyarrow (a job's data, data sets), Celery and kombu (the queue), prometheus_client
(/metrics). `tests/unit/test_import_boundaries.py` checks that starting the API loads none of them.

Such an import goes inside `needed_for(...)`: a module that is missing or broken is then a typed 503 that
names it and the fix, never a 500 with a traceback. `missing()` tells at start-up, without importing them,
whether each is installed, so an incomplete install still refuses to start, as it did when they were
imported at start.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from service.core.errors import KtuneError

DEFERRED = ("numpy", "pyarrow", "celery", "kombu", "prometheus_client")
# pyproject.toml's tool.ktune.api-dependencies name them; `scripts/requirements.py api` prints them.
FIX = "install ktune's API dependencies (`pip install .`, or what `scripts/requirements.py api` prints)"


class MissingModule(KtuneError):
    """A module the request needs cannot be imported: the install is incomplete (503, `missing_module`)."""

    def __init__(self, module: str, purpose: str) -> None:
        super().__init__(
            f"this API cannot {purpose}: the Python module '{module}' cannot be imported here; {FIX}",
            "missing_module",
            503,
        )
        self.module = module


@contextlib.contextmanager
def needed_for(purpose: str) -> Iterator[None]:
    """Wrap the imports of a deferred module: raises MissingModule when one fails (`purpose`: what the
    request wanted, as in "read a data set")."""
    try:
        yield
    except ImportError as exc:
        raise MissingModule(exc.name or "?", purpose) from exc


def missing(modules: tuple[str, ...] = DEFERRED) -> list[str]:
    """The modules among `modules` that are not installed, found without importing them."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken entry in sys.modules
            found = False
        if not found:
            absent.append(name)
    return absent
