"""The OpenAPI document says what the API answers: ErrorBody for every error, a 422 only where a parameter
can be invalid, the store's 503 on every /v1 route, and the headers answers carry.

What the live API actually answers against this document is tests/integration/test_openapi_fuzz.py's.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.openapi import document_answers
from service.api.schemas import ErrorBody
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
        "GET /v1/jobs",
        "GET /v1/jobs/{job_id}/trials",  # ?history=maybe
        "GET /v1/jobs/{job_id}/events",  # Last-Event-ID: not-an-id
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
