"""GET /v1/jobs/{id}/events: a job's events as Server-Sent Events (HTTP only; `event_reader` reads them)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from service.api import job_service
from service.api.auth import UNAUTHORIZED, CallerDep, authenticate
from service.api.deps import JobIdDep, StoreDep
from service.api.event_reader import EventReader
from service.api.schemas import ErrorBody
from service.api.sse import EVENT_ID, MEDIA_TYPE
from service.core.errors import FieldProblem, InvalidRequest, shorten
from service.core.events import EVENT_TYPES

router = APIRouter(
    prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(authenticate)], responses=UNAUTHORIZED
)

_EXAMPLE = (
    "id: 1733350000000-0\nevent: trial.finished\n"
    'data: {"job_id":"...","time":"2026-12-04T22:00:00+00:00","trial_id":"03","status":"completed",'
    '"objective_value":0.12}\n\n'
)
# One event of the stream (as OpenAPI 3.2's `itemSchema` would say it): its id, type and one-line JSON data.
_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "what Last-Event-ID resumes after"},
        "event": {"type": "string", "enum": list(EVENT_TYPES)},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "job_id, time (ISO 8601 UTC) and the type's own values (README: Live events)",
        },
    },
    "required": ["id", "event", "data"],
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {MEDIA_TYPE: {"schema": _EVENT, "example": _EXAMPLE}},
        "description": "events: job.status, trial.started, trial.epoch, trial.finished, job.best",
    },
    404: {"model": ErrorBody, "description": "no such job"},
    422: {"model": ErrorBody, "description": "Last-Event-ID is not an id this stream sent"},
}


@router.get(
    "/{job_id}/events",
    summary="Follow a job's events",
    response_class=StreamingResponse,
    responses=_RESPONSES,
)
async def job_events(
    request: Request,
    job_id: JobIdDep,
    store: StoreDep,
    caller: CallerDep,
    last_event_id: Annotated[
        str | None, Header(description="resume after this event's id (what `id:` said)")
    ] = None,
) -> StreamingResponse:
    """Follow a job's events (Server-Sent Events): stored ones first, then live, until it ends."""
    await run_in_threadpool(job_service.get, store, job_id, caller.tenant)
    if last_event_id is not None and not EVENT_ID.fullmatch(last_event_id.strip()):
        raise InvalidRequest(
            [
                FieldProblem(
                    "Last-Event-ID",
                    f"'{shorten(last_event_id, 40)}' is not an event id: send the `id:` of the last event "
                    "received, like 1733350000000-0, or no header to start from the first event",
                )
            ]
        )
    reader: EventReader = request.app.state.event_reader
    return StreamingResponse(
        reader.follow(job_id, last_event_id.strip() if last_event_id else None),
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
