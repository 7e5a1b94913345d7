"""A job as clients see it (`JobPublic`), from what the store holds: the API's answers and webhook bodies.

Free of FastAPI, so a worker renders a webhook's body exactly as GET /v1/jobs/{id} does.
"""

from __future__ import annotations

from service.api.schemas import BestTrialPublic, JobPublic, ObjectivePublic, Progress
from service.core.states import TrialStatus
from service.core.store import JobView


def view_to_public(view: JobView) -> JobPublic:
    record, counts = view.record, view.trial_counts
    spec = record.spec
    return JobPublic(
        id=record.id,
        name=spec.get("name"),
        status=record.status,
        task=spec["task"],
        algorithm=spec["tuner"]["algorithm"],
        objective=ObjectivePublic(name=spec["objective"]["name"], direction=spec["objective"]["direction"]),
        progress=Progress(
            trials_total=spec["tuner"]["max_trials"],
            completed=counts[TrialStatus.COMPLETED],
            running=counts[TrialStatus.RUNNING],
            queued=counts[TrialStatus.QUEUED],
            failed=counts[TrialStatus.FAILED],
            cancelled=counts[TrialStatus.CANCELLED],
        ),
        best_trial=BestTrialPublic.of(record.best) if record.best else None,
        error=record.error,
        waiting=record.waiting,
        classes=record.data.classes if record.data else None,
        data=record.data,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        spec=spec,
        webhook=record.webhook,
        stopped_by=record.stopped_by,
        finalization=record.finalization,
        recheck=record.recheck,
    )
