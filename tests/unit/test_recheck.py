"""A recheck's request, its summary of each retrained trial, and its state at a given time
(`service.core.recheck`); which trials a worker retrains (`worker.recheck.top_trials`)."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from service.core.job_runs import RunStatus, current, current_text
from service.core.recheck import Recheck, RecheckedTrial, RecheckRequest, RecheckResult, best_by_mean
from service.core.records import ExecutionRecord, TrialRecord
from service.core.spec import JobCreate
from service.core.states import TrialStatus
from worker.recheck import top_trials

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)

# --- the request ----------------------------------------------------------------------------------------


def test_an_empty_body_is_three_trials_three_seeds() -> None:
    request = RecheckRequest.model_validate({})
    assert (request.top_k, request.seeds) == (3, 3)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": 11}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"seeds": 1}, "seeds"),
        ({"seeds": 11}, "seeds"),
        ({"seeds": "3"}, "seeds"),
        ({"seed": 3}, "seed"),
    ],
)
def test_a_malformed_request_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        RecheckRequest.model_validate(body)
    assert (field,) in [error["loc"] for error in raised.value.errors()]


# --- the summary ----------------------------------------------------------------------------------------


def rechecked(trial_id: str, values: list[float | None], objective: float = 0.5) -> RecheckedTrial:
    seeds = list(range(len(values)))
    return RecheckedTrial.of(trial_id, {"units_0": 8}, {}, 20, objective, seeds, values)


def test_a_trials_summary_is_the_mean_and_sample_spread_of_its_values() -> None:
    values: list[float | None] = [0.75, 1.0, 0.5]
    summary = rechecked("00", values)
    assert summary.mean == pytest.approx(0.75)
    assert summary.std == pytest.approx(statistics.stdev([0.75, 1.0, 0.5])) == pytest.approx(0.25)
    assert (summary.min, summary.max) == (0.5, 1.0)
    assert summary.values == values and summary.seeds == [0, 1, 2]


def test_values_that_were_never_a_number_are_left_out_of_the_summary() -> None:
    summary = rechecked("00", [0.5, float("nan"), None, 0.7])
    assert summary.values == [0.5, None, None, 0.7]
    assert summary.mean == pytest.approx(0.6)
    one = rechecked("01", [0.5, float("inf")])
    assert (one.mean, one.std, one.min, one.max) == (0.5, None, 0.5, 0.5)
    none = rechecked("02", [None, None])
    assert (none.mean, none.std, none.min, none.max) == (None, None, None, None)


def test_the_best_mean_follows_the_objectives_direction() -> None:
    trials = [rechecked("00", [0.5, 0.7]), rechecked("01", [0.8, 0.8]), rechecked("02", [0.1, 0.2])]
    assert best_by_mean(trials, "max") == "01"
    assert best_by_mean(trials, "min") == "02"
    assert best_by_mean([rechecked("00", [None, None])], "max") is None


def test_on_equal_means_the_trial_the_search_ranked_higher_is_best() -> None:
    trials = [rechecked("03", [0.5, 1.0]), rechecked("01", [1.0, 0.5])]
    assert best_by_mean(trials, "max") == "03"


def test_the_winner_holds_only_when_it_is_best_by_its_mean() -> None:
    lucky = [rechecked("00", [0.5, 0.6], objective=1.0), rechecked("01", [0.9, 0.95], objective=0.9)]
    result = RecheckResult.of("val_accuracy", "max", "00", lucky)
    assert (result.best_by_mean, result.winner_holds) == ("01", False)
    held = RecheckResult.of("val_accuracy", "min", "00", lucky)
    assert (held.best_by_mean, held.winner_holds) == ("00", True)


def queued(deadline: datetime) -> Recheck:
    return Recheck(
        run_id="r1", status=RunStatus.QUEUED, requested_at=NOW, deadline_at=deadline, top_k=3, seeds=3
    )


def test_a_recheck_past_its_deadline_has_failed_with_worker_lost() -> None:
    record = queued(NOW + timedelta(minutes=5))
    assert current(record, NOW) is record
    lost = current(record, NOW + timedelta(minutes=6))
    assert lost.status is RunStatus.FAILED and lost.error is not None and lost.error.code == "worker_lost"
    assert "KTUNE_RECHECK_TIMEOUT_SECONDS" in lost.error.message and "recheck again" in lost.error.message
    text = record.model_dump_json()
    assert current_text(text, NOW, Recheck) is text
    assert Recheck.model_validate_json(current_text(text, NOW + timedelta(minutes=6), Recheck)) == lost


# --- which trials are retrained -------------------------------------------------------------------------


def spec(objective: dict[str, Any]) -> JobCreate:
    body: dict[str, Any] = {
        "task": "binary_classification",
        "data": {"train": {"x": [[0], [1], [2], [3], [4]], "y": [0, 1, 0, 1, 1]}},
        "objective": objective,
    }
    return JobCreate.model_validate(body)


def trial(
    trial_id: str,
    objective: float | None,
    val_loss: float,
    minute: int,
    status: TrialStatus = TrialStatus.COMPLETED,
) -> TrialRecord:
    return TrialRecord(
        id=trial_id,
        status=status,
        hyperparameters={"units_0": 8},
        objective_value=objective,
        metrics={} if objective is None else {"val_accuracy": objective, "val_loss": val_loss},
        executions=[ExecutionRecord(best_epoch=3)],
        finished_at=NOW + timedelta(minutes=minute),
    )


TRIALS = [
    trial("00", 1.0, 0.4, minute=1),
    trial("01", 0.75, 0.1, minute=2),
    trial("02", 1.0, 0.2, minute=5),  # the best: an equal objective, a lower val_loss
    trial("03", None, 0.0, minute=3, status=TrialStatus.FAILED),
    trial("04", 1.0, 0.4, minute=4),  # ties with 00, which completed first
    trial("05", None, 0.0, minute=0, status=TrialStatus.RUNNING),
]


def test_the_top_trials_are_the_completed_ones_by_the_jobs_ranking() -> None:
    accuracy = spec({"name": "val_accuracy"})
    ids = [t.id for t in top_trials(accuracy, TRIALS, 10, winner="02")]
    assert ids == ["02", "00", "04", "01"]
    assert [t.id for t in top_trials(accuracy, TRIALS, 2, winner="02")] == ["02", "00"]
    # Without a tie-breaker, the first of the tied to complete leads.
    plain = spec({"name": "val_accuracy", "tie_breaker": None})
    assert [t.id for t in top_trials(plain, TRIALS, 3, winner="00")] == ["00", "04", "02"]


def test_the_searchs_winner_is_always_rechecked_first() -> None:
    accuracy = spec({"name": "val_accuracy"})
    assert [t.id for t in top_trials(accuracy, TRIALS, 1, winner="04")] == ["04"]
