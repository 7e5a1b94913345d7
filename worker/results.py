"""A finished trial's result: what training produced (`TrialOutcome`), and how it waits in the store for
the job's next search step (`JobStore.hand_in_result`): the trial's record and its outcome, less the
candidate model (a result with one is taken in by its own worker's step, which holds the file)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.core.records import TrialRecord
from service.core.states import TrialStatus
from service.core.store_trials import stored_trial


@dataclass
class TrialOutcome:
    """What training a trial produced, handed to `search.finish_trial`."""

    status: TrialStatus
    metrics: dict[str, float]
    objective_value: float | None
    best_step: int
    candidate: Path | None = None
    error_code: str | None = None
    error_message: str | None = None


def encode(record: TrialRecord, outcome: TrialOutcome) -> str:
    """The result as the store keeps it: JSON, with the time it was handed in (steps take results in in
    that order)."""
    return json.dumps(
        {
            "record": stored_trial(record),
            "status": outcome.status.value,
            "metrics": outcome.metrics,
            "objective_value": outcome.objective_value,
            "best_step": outcome.best_step,
            "error_code": outcome.error_code,
            "error_message": outcome.error_message,
            "at": time.time(),
        }
    )


def decode(raw: str) -> tuple[float, TrialRecord, TrialOutcome]:
    """When it was handed in, the trial's record and its outcome (without a candidate)."""
    data: dict[str, Any] = json.loads(raw)
    outcome = TrialOutcome(
        TrialStatus(data["status"]),
        data["metrics"],
        data["objective_value"],
        data["best_step"],
        None,
        data["error_code"],
        data["error_message"],
    )
    return float(data["at"]), TrialRecord.model_validate_json(data["record"]), outcome
