"""Response bodies: a trial's id has one name, `id`, in the trial list and in a job's best_trial, and
`history=false` leaves each execution's history out rather than sending an empty one."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.job_service import trial_to_public
from service.api.schemas import BestTrialPublic, TrialList
from service.core.records import BestTrial, ExecutionRecord, TrialRecord
from service.core.states import TrialStatus

TRIAL = TrialRecord(
    id="03",
    status=TrialStatus.COMPLETED,
    hyperparameters={"units_0": 32},
    objective_value=0.9,
    executions=[ExecutionRecord(history={"loss": [0.5, 0.2]}, best_epoch=1)],
)


def test_the_best_trial_is_named_by_id_as_in_the_trial_list() -> None:
    best = BestTrial(
        trial_id="03", hyperparameters={"units_0": 32}, objective_value=0.9, metrics={"loss": 0.2}
    )
    public = BestTrialPublic.of(best).model_dump(mode="json")
    assert public["id"] == trial_to_public(TRIAL).id == "03"
    assert public["trial_id"] == "03"  # the name it had before, kept for clients that read it (deprecated)


def test_the_deprecated_name_is_marked_deprecated_in_the_schema() -> None:
    properties = BestTrialPublic.model_json_schema()["properties"]
    assert properties["trial_id"]["deprecated"] is True
    assert "deprecated" not in properties["id"]


def answered(history: bool) -> dict[str, object]:
    """The trial list as the API sends it (FastAPI's serialization of the response model)."""
    app = FastAPI()

    @app.get("/trials", response_model=TrialList)
    def trials() -> TrialList:
        return TrialList(job_id="j", items=[trial_to_public(TRIAL, history)])

    body: dict[str, object] = TestClient(app).get("/trials").json()
    return body


def test_without_history_the_executions_leave_it_out() -> None:
    (trial,) = answered(history=False)["items"]  # type: ignore[misc]
    assert trial["executions"] == [{"best_epoch": 1, "resumed_at_epochs": []}]


def test_with_history_the_executions_carry_it() -> None:
    (trial,) = answered(history=True)["items"]  # type: ignore[misc]
    assert trial["executions"][0]["history"] == {"loss": [0.5, 0.2]}
