"""The JSON of a job as GET /v1/jobs/{id} answers it (and each item of a page of GET /v1/jobs), rendered
from the job as stored and remembered by that stored text.

Rendering a job parses its spec, data plan and best trial, builds a `JobPublic` and serializes it: about
0.1 ms of Python, 2 ms for a page of 20. A job that has not changed since it was last rendered costs a
lookup instead, and most jobs a client polls have not: finished jobs never change, running ones between
trials. A job that changed is rendered again, but its spec (which never changes) is parsed and serialized
once: that is about a third of a rendering.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_json

from service.api.job_view import view_to_public
from service.api.schemas import JobPublic
from service.core.job_runs import current_text
from service.core.records import utcnow
from service.core.store import StoredJob
from service.core.store_runs import RUN_FIELDS

CACHED_JOBS = 1024
"""How many renderings of jobs are kept (the least recently used go first); each is a few kilobytes, its
key the stored text it was rendered from."""

CACHED_SPECS = 256
"""How many parsed specs are kept, by their stored text."""

# A rendering is spliced from the JSON of everything but the spec and the webhook, then those two: they
# must stay the last two fields of JobPublic (a unit test compares every rendering with model_dump_json).
_TAIL = ("spec", "webhook")
assert tuple(JobPublic.model_fields)[-2:] == _TAIL, "job_json splices spec and webhook in last"


def job_json(job: StoredJob) -> str:
    """`view_to_public(job.view()).model_dump_json()`, from the cache when this stored text was rendered
    before. `job` must be `counted`."""
    fields = job.fields
    for name, model in RUN_FIELDS.items():
        stored = fields.get(name)
        if stored is not None:
            # A run past its deadline reads as failed: the text it renders from says so, so that the cached
            # rendering of the text before the deadline is never the answer after it.
            now = current_text(stored, utcnow(), model)
            if now is not stored:
                fields = {**fields, name: now}
    return _render(job.id, tuple(fields.items()), tuple(job.counts.items()), job.trials)


@functools.lru_cache(maxsize=CACHED_JOBS)
def _render(
    job_id: str, fields: tuple[tuple[str, str], ...], counts: tuple[tuple[str, str], ...], trials: int
) -> str:
    # Keyed by all the rendering reads (the job's whole hash and its counts), never by the job's id alone:
    # a job that changed in any way (status, best trial, counts, even its spec) is a new key, never a
    # stale answer.
    stored = StoredJob(job_id, dict(fields), dict(counts), trials)
    spec = _spec(stored.fields["spec"])
    public = view_to_public(stored.view(spec.parsed))
    head = public.model_dump_json(exclude=set(_TAIL))
    webhook = "null" if public.webhook is None else public.webhook.model_dump_json()
    return f'{head[:-1]},"spec":{spec.json},"webhook":{webhook}}}'


@dataclass(frozen=True)
class _Spec:
    parsed: dict[str, Any]  # shared by every rendering of a job with this spec: read, never changed
    json: str  # as JobPublic serializes it


@functools.lru_cache(maxsize=CACHED_SPECS)
def _spec(text: str) -> _Spec:
    # Keyed by the stored text itself: another spec (another job's, or a job's rewritten one) is another key.
    parsed = json.loads(text)
    return _Spec(parsed, to_json(parsed).decode())


def page_json(items: list[str], next_cursor: str | None) -> str:
    """A `JobList`'s JSON from its items' (`job_json`), as `JobList.model_dump_json` writes it."""
    return f'{{"items":[{",".join(items)}],"next_cursor":{to_json(next_cursor).decode()}}}'


def cache_info() -> functools._CacheInfo:
    """Hits, misses and size of the cache of renderings."""
    return _render.cache_info()


def clear_cache() -> None:
    """Forget every rendering and parsed spec."""
    _render.cache_clear()
    _spec.cache_clear()
