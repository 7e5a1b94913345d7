"""The JSON of a job as GET /v1/jobs/{id} answers it (and each item of a page of GET /v1/jobs), rendered
from the job as stored and remembered by that stored text.

Rendering a job parses its spec, data plan and best trial, builds a `JobPublic` and serializes it: about
0.1 ms of Python, 2 ms for a page of 20. A job that has not changed since it was last rendered costs a
lookup instead, and most jobs a client polls have not: finished jobs never change, running ones between
trials.
"""

from __future__ import annotations

import functools

from pydantic_core import to_json

from service.api.job_view import view_to_public
from service.core.store import StoredJob

CACHED_JOBS = 1024
"""How many renderings are kept (the least recently used go first); each is a few kilobytes, its key the
stored text it was rendered from."""


def job_json(job: StoredJob) -> str:
    """`view_to_public(job.view()).model_dump_json()`, from the cache when this stored text was rendered
    before. `job` must be `counted`."""
    return _render(job.id, tuple(job.fields.items()), tuple(job.counts.items()), job.trials)


@functools.lru_cache(maxsize=CACHED_JOBS)
def _render(
    job_id: str, fields: tuple[tuple[str, str], ...], counts: tuple[tuple[str, str], ...], trials: int
) -> str:
    # Keyed by all the rendering reads (the job's whole hash and its counts), never by the job's id alone:
    # a job that changed in any way (status, best trial, counts, even its spec) is a new key, never a
    # stale answer.
    view = StoredJob(job_id, dict(fields), dict(counts), trials).view()
    return view_to_public(view).model_dump_json()


def page_json(items: list[str], next_cursor: str | None) -> str:
    """A `JobList`'s JSON from its items' (`job_json`), as `JobList.model_dump_json` writes it."""
    return f'{{"items":[{",".join(items)}],"next_cursor":{to_json(next_cursor).decode()}}}'


def cache_info() -> functools._CacheInfo:
    """Hits, misses and size of the cache of renderings."""
    return _render.cache_info()


def clear_cache() -> None:
    _render.cache_clear()
