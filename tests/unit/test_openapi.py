"""The OpenAPI document says what the API answers: ErrorBody for every error, a 422 only where a parameter
can be invalid, a 409 only where the state can conflict, the store's 503 on every /v1 route, and the headers
answers carry; it is valid OpenAPI, every operation has a summary and a description, and the contract's
example requests (with what the service answers them) are its examples.

What the live API actually answers against this document is tests/integration/test_openapi_fuzz.py's.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from openapi_spec_validator import validate
from pydantic import BaseModel, Field

from service.api.app import create_app
from service.api.openapi import document_answers
from service.api.openapi_examples import EXAMPLES_DIR, document_examples, load_requests
from service.api.schemas import ErrorBody, JobPublic
from service.core.params import Float, Int
from service.core.settings import Settings

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth="off"))


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def json_schema(response: dict[str, Any]) -> Any:
    return response.get("content", {}).get("application/json", {}).get("schema")


def test_fastapis_validation_error_body_is_documented_nowhere(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(document)
    assert "ValidationError" not in document["components"]["schemas"]


def test_every_error_answer_is_an_error_body(document: dict[str, Any]) -> None:
    for label, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400 and label != "GET /readyz":  # /readyz's 503 is its Health report
                assert json_schema(response) == ERROR_BODY, (label, status)


def test_a_422_is_documented_only_where_a_parameter_or_body_can_be_invalid(document: dict[str, Any]) -> None:
    with_422 = {label for label, operation in operations(document) if "422" in operation["responses"]}
    assert with_422 == {
        "POST /v1/jobs",
        "POST /v1/jobs/validate",
        "GET /v1/jobs",
        "GET /v1/jobs/{job_id}/trials",  # ?history=maybe
        "GET /v1/jobs/{job_id}/events",  # Last-Event-ID: not-an-id
        "POST /v1/jobs/{job_id}/predict",
        "POST /v1/jobs/{job_id}/finalize",
        "POST /v1/jobs/{job_id}/recheck",
        "POST /v1/datasets",
        "GET /v1/datasets",
    }


def test_routes_that_cannot_conflict_document_no_409(document: dict[str, Any]) -> None:
    assert "409" not in document["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert "409" not in document["paths"]["/v1/jobs/{job_id}/trials"]["get"]["responses"]


def test_every_v1_route_documents_the_stores_503(document: dict[str, Any]) -> None:
    for label, operation in operations(document):
        if " /v1/" in label:
            assert json_schema(operation["responses"]["503"]) == ERROR_BODY, label
    assert "503" not in document["paths"]["/healthz"]["get"]["responses"]


def test_created_and_accepted_answers_document_their_location(document: dict[str, Any]) -> None:
    for path, status in (("/v1/jobs", "202"), ("/v1/datasets", "201")):
        location = document["paths"][path]["post"]["responses"][status]["headers"]["Location"]
        assert location["required"] is True
    busy = document["paths"]["/v1/jobs"]["post"]["responses"]["503"]["headers"]["Retry-After"]
    assert busy["required"] is False


def test_an_invalid_query_parameter_answers_the_documented_422(app: FastAPI) -> None:
    # Validation fails before the route runs, so no Redis is needed.
    response = TestClient(app).get(f"/v1/jobs/{uuid.uuid4()}/trials", params={"history": "maybe"})
    assert response.status_code == 422
    assert ErrorBody.model_validate(response.json()).error.fields[0].field == "history"


def test_fastapis_422_is_kept_for_parameters_that_can_be_invalid_and_dropped_for_plain_path_text() -> None:
    app = FastAPI()

    @app.get("/things/{name}")
    def by_name(name: str) -> None: ...

    @app.get("/things/{number}/parts")
    def by_number(number: int) -> None: ...

    @app.get("/search")
    def search(q: Annotated[str, Query()]) -> None: ...  # required: leaving it out is a 422

    document = document_answers(app.openapi())
    responses = {path: item["get"]["responses"] for path, item in document["paths"].items()}
    assert "422" not in responses["/things/{name}"]
    assert json_schema(responses["/things/{number}/parts"]["422"]) == ERROR_BODY
    assert json_schema(responses["/search"]["422"]) == ERROR_BODY
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert "ErrorBody" in document["components"]["schemas"]


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)  # raises OpenAPIValidationError, naming the first invalid part


# Pydantic's names for constraints, which JSON Schema does not know (it says minimum, exclusiveMaximum...).
PYDANTIC_CONSTRAINTS = {"ge", "gt", "le", "lt", "multiple_of", "min_length", "max_length"}


def schema_keys(node: Any) -> Iterator[str]:
    """Every key of a schema object in `node`, leaving out property names and example values."""
    if isinstance(node, list):
        for item in node:
            yield from schema_keys(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for definition in value.values():
                    yield from schema_keys(definition)
            elif key not in ("example", "examples", "default"):
                yield key
                yield from schema_keys(value)


def test_no_schema_carries_pydantics_constraint_names(document: dict[str, Any]) -> None:
    assert PYDANTIC_CONSTRAINTS.isdisjoint(schema_keys(document))
    seed = document["components"]["schemas"]["TunerSpec"]["properties"]["seed"]["anyOf"][0]
    assert seed == {"type": "integer", "minimum": 0, "exclusiveMaximum": 2**31}


class Body(BaseModel):
    count: Int | None = Field(None, ge=1)  # a validator before a constraint, in a union: `ge` leaks
    share: Float | None = Field(None, gt=0, lt=1)


def test_pydantics_constraint_names_become_json_schemas() -> None:
    app = FastAPI()

    @app.post("/things")
    def create(body: Body) -> None: ...

    raw = app.openapi()
    assert "ge" in json.dumps(raw["components"]["schemas"]["Body"])  # what the rewrite is for
    properties = document_answers(raw)["components"]["schemas"]["Body"]["properties"]
    assert properties["count"]["anyOf"][0] == {"type": "integer", "minimum": 1}
    assert properties["share"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}


def test_every_operation_has_a_summary_and_a_description(document: dict[str, Any]) -> None:
    for label, operation in operations(document):
        summary, description = operation.get("summary", ""), operation.get("description", "")
        # FastAPI's default summary is the function's name in title case ("Get Job").
        function = operation["operationId"].split("_v1_")[0].split("_healthz")[0].split("_readyz")[0]
        assert summary and summary != function.replace("_", " ").title(), label
        assert len(description) > len(summary), label


def test_only_routes_that_can_conflict_document_a_409(document: dict[str, Any]) -> None:
    with_409 = {label for label, operation in operations(document) if "409" in operation["responses"]}
    assert with_409 == {
        "POST /v1/jobs",  # an Idempotency-Key whose first request is still in progress
        "POST /v1/jobs/{job_id}/cancel",
        "DELETE /v1/jobs/{job_id}",
        "GET /v1/jobs/{job_id}/artifacts/best-model",  # no completed trial yet
        "GET /v1/jobs/{job_id}/artifacts/best-hyperparameters",
        "POST /v1/jobs/{job_id}/predict",  # no completed trial yet, so no model
        "POST /v1/jobs/{job_id}/finalize",  # not succeeded, no best trial, or a finalization running
        "GET /v1/jobs/{job_id}/artifacts/final-model",  # not finalized yet
        "GET /v1/jobs/{job_id}/artifacts/final-model-card",
        "POST /v1/jobs/{job_id}/recheck",  # not succeeded, no completed trial, or a recheck running
        "DELETE /v1/datasets/{dataset_id}",
    }


def test_job_routes_document_their_422_as_an_error_body(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for operation in item.values():
            if "{job_id}" in path and "422" in operation["responses"]:
                assert json_schema(operation["responses"]["422"]) == ERROR_BODY, path


def test_the_job_request_examples_are_the_contracts(document: dict[str, Any]) -> None:
    create = document["paths"]["/v1/jobs"]["post"]
    examples = create["requestBody"]["content"]["application/json"]["examples"]
    files = {path.stem: json.loads(path.read_text()) for path in EXAMPLES_DIR.glob("*.json")}
    assert {name: example["value"] for name, example in examples.items()} == files
    assert all(example["summary"] for example in examples.values())


def test_answer_examples_are_what_the_service_answers(document: dict[str, Any]) -> None:
    create = document["paths"]["/v1/jobs"]["post"]["responses"]
    accepted = create["202"]["content"]["application/json"]["example"]
    job = JobPublic.model_validate(accepted)
    assert (job.status, job.name, job.classes) == ("queued", "xor-classifier", [0, 1])
    got = document["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["200"]
    assert got["content"]["application/json"]["example"] == accepted
    invalid = ErrorBody.model_validate(create["422"]["content"]["application/json"]["example"])
    assert invalid.error.fields[0].field == "objective.name"
    assert "is not a metric this job computes" in invalid.error.fields[0].message


def test_without_the_example_files_the_document_has_no_examples(tmp_path: Path) -> None:
    # The API image installs service/ without examples/: its document is complete, only without examples.
    assert load_requests(tmp_path) == {}
    schema = create_app(Settings(redis_url="redis://127.0.0.1:1/0", auth="off")).openapi()
    schema = copy.deepcopy(schema)
    create = schema["paths"]["/v1/jobs"]["post"]
    del create["requestBody"]["content"]["application/json"]["examples"]
    document_examples(schema, load_requests(tmp_path))
    assert "examples" not in create["requestBody"]["content"]["application/json"]
