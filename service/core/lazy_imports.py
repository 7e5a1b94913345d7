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
import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterator

from service.core.errors import KtuneError

log = logging.getLogger(__name__)

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
        if sys.modules.get(name) is not None:
            # Imported already (kombu replaces its package module with one that has no __spec__, which
            # find_spec refuses); None there means made unimportable.
            continue
        try:
            found = name not in sys.modules and importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken entry in sys.modules
            found = False
        if not found:
            absent.append(name)
    return absent


# What the first requests that need the deferred modules import: loaded ahead of them by `warm_up`.
WARM_UP = (
    "service.core.job_data",  # numpy, pyarrow: a job's inline data, data sets
    "service.core.data_codec",
    "celery",
    "kombu.transport.redis",  # the queue's transport, which Celery loads at the first send
    "service.api.metrics_export",  # prometheus_client
)


def warm_up(modules: tuple[str, ...] = WARM_UP) -> None:
    """Import the modules the first requests would (run in a thread once a replica serves): the first job
    then costs what later ones do. A module that fails is left to its first use, which answers the typed
    503."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # reported at first use, with the request that needs it
            log.warning("could not load %s ahead of its first use", name, exc_info=True)
