"""The request split in two: `JobSpec` (everything but the data, what is stored and what workers load) and
`JobCreate(JobSpec)`, which adds the data and the rules on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.api.errors import validation_problems
from service.core.spec import JobCreate, JobSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def fields(error: ValidationError) -> list[str]:
    return [p.field for p in validation_problems(list(error.errors()))]


@pytest.mark.parametrize("name", ["xor-seed", "xor-classifier"])
def test_the_stored_spec_loads_as_a_job_spec_equal_to_the_request_less_its_data(name: str) -> None:
    job = JobCreate.model_validate(example(name)).resolved()
    stored = json.loads(json.dumps(job.model_dump(mode="json", exclude={"data"})))  # as in Redis
    spec = JobSpec.model_validate(stored)
    assert spec == job.without_data()
    assert spec.model_dump() == job.model_dump(exclude={"data"})
    for name_ in ("loss", "metrics", "output_activation", "objective_name", "objective_direction", "queue"):
        assert getattr(spec, name_) == getattr(job, name_)
    assert isinstance(job, JobSpec)


def test_a_job_spec_has_no_data_field() -> None:
    with pytest.raises(ValidationError) as raised:
        JobSpec.model_validate(example("xor-seed"))
    assert fields(raised.value) == ["data"]


def test_the_data_free_rules_hold_without_data() -> None:
    body = example("xor-seed")
    del body["data"]
    body["objective"] = {"name": "val_accuracy"}
    with pytest.raises(ValidationError) as raised:
        JobSpec.model_validate(body)
    assert fields(raised.value) == ["objective.name"]


def test_the_label_rules_need_the_data_and_run_where_they_always_did() -> None:
    body = example("xor-classifier")
    body["data"]["train"]["y"] = [0, 1, 1, 2]
    with pytest.raises(ValidationError) as raised:
        JobCreate.model_validate(body)
    assert fields(raised.value) == ["data.train.y"]
    del body["data"]
    JobSpec.model_validate(body)  # the same spec without data is fine


def test_classes_come_from_the_data() -> None:
    body = example("xor-classifier")
    body.update(task="multiclass_classification")
    body["data"]["train"]["y"] = [0, 4, 1, 2]
    body["data"]["validation"]["y"] = [0, 4, 1, 2]
    assert JobCreate.model_validate(body).classes == [0, 1, 2, 4]
    assert not hasattr(JobSpec, "classes")
