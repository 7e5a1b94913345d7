"""Invalid requests through the HTTP API: 422/413 bodies that name the offending field, never a 500.

No Redis: the lifespan (the sweeper) is not entered, and the job store is one whose Redis client fails the
test on any use, so these paths are shown never to reach Redis.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.core.settings import Limits, Settings
from service.core.store import JobStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LIMITS = Limits(
    max_rows=1_000,
    max_features=10,
    max_hidden_layers=32,
    max_units=4_096,
    max_epochs=1_000,
    max_trials=50,
    max_executions_per_trial=3,
    max_parallel_trials=8,
    max_body_bytes=4_096,
)


class _NoRedis:
    """A Redis client that must not be used: request validation happens before any Redis call."""

    def register_script(self, script: str) -> object:
        return object()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Redis was used ({name}) on a request that fails validation")


def _app(limits: Limits = LIMITS) -> FastAPI:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", limits=limits, auth="off")  # keys: test_auth.py
    app = create_app(settings)
    app.state.store = JobStore(_NoRedis())  # type: ignore[arg-type]
    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    # Not `with TestClient(...)`: that would run the lifespan, whose sweeper polls Redis.
    return TestClient(_app())


def seed() -> dict[str, Any]:
    return json.loads((EXAMPLES / "xor-seed.json").read_text())


def classifier() -> dict[str, Any]:
    return json.loads((EXAMPLES / "xor-classifier.json").read_text())


def changed(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return body


def error_of(response: Any, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "fields"}
    return error


def fields_of(response: Any) -> dict[str, str]:
    error = error_of(response)
    assert error["code"] == "invalid_request"
    fields = {problem["field"]: problem["message"] for problem in error["fields"]}
    # The summary message repeats every field problem.
    for field, message in fields.items():
        assert f"{field}: {message}" in error["message"]
    return fields


def test_seed_tutorial_objective_bug_is_a_422_naming_objective_name(client: TestClient) -> None:
    body = changed(seed(), "objective", {"name": "val_accuracy", "direction": "max"})
    fields = fields_of(client.post("/v1/jobs", json=body))
    assert list(fields) == ["objective.name"]
    assert "'val_accuracy'" in fields["objective.name"]
    assert "'val_mean_absolute_error'" in fields["objective.name"]


@pytest.mark.parametrize(
    ("path", "value", "field", "fragment"),
    [
        ("model.units", {"min": 64, "max": 8}, "model.units", "must not be greater than max"),
        ("model.units", {"min": True, "max": 8}, "model.units.min", "not true or false"),
        ("model.units", {"min": 8}, "model.units.max", "is required"),
        ("model.units", {"min": 8, "max": 16, "typo": 1}, "model.units.typo", "is not a field"),
        ("model.foo", 1, "model.foo", "is not a field"),
        ("tuner.trials", 5, "tuner.trials", "is not a field"),
        ("data.train.z", [], "data.train.z", "is not a field"),
        ("data.train.x", [[0, 0], [0], [1, 0], [1, 1]], "data.train", "rectangular"),
        ("data.train.y", [0, 1], "data.train", "4 rows but y has 2"),
        ("data.validation.x", [[0], [1], [1], [0]], "data", "features"),
        ("data.validation_split", 0.2, "data", "either validation or validation_split"),
        ("model.activation", {"values": ["relu", "relu"]}, "model.activation", "must not repeat"),
        ("model.activation", "swishy", "model.activation", "'swishy' is not supported"),
        ("model.dropout", 1.0, "model.dropout", "[0, 1)"),
        ("model.output_activation", "softmax", "model.output_activation", "does not fit task regression"),
        ("optimizer.learning_rate", 0, "optimizer.learning_rate", "greater than 0"),
        (
            "optimizer.learning_rate",
            {"min": 0, "max": 0.1, "sampling": "log"},
            "optimizer.learning_rate",
            "log sampling needs min > 0",
        ),
        ("optimizer.learning_rate", {"values": [0.1, 0.1]}, "optimizer.learning_rate", "must not repeat"),
        ("optimizer.name", "lbfgs", "optimizer.name", "'lbfgs' is not supported"),
        ("training.loss", "binary_crossentropy", "training.loss", "does not fit task regression"),
        ("training.metrics", ["accuracy"], "training.metrics", "does not fit task regression"),
        ("tuner.max_trials", 0, "tuner.max_trials", "greater than or equal to 1"),
        ("tuner.algorithm", "evolution", "tuner.algorithm", "'random'"),
        ("task", "clustering", "task", "regression"),
    ],
)
def test_invalid_bodies_name_the_offending_path(
    client: TestClient, path: str, value: Any, field: str, fragment: str
) -> None:
    fields = fields_of(client.post("/v1/jobs", json=changed(seed(), path, value)))
    assert field in fields, fields
    assert fragment in fields[field]


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/jobs/validate"])
def test_cmaes_over_a_list_of_names_is_a_422_on_tuner_algorithm_with_the_fix(
    client: TestClient, route: str
) -> None:
    body = changed(classifier(), "tuner.algorithm", "cmaes")  # it tunes activation and optimizer names
    fields = fields_of(client.post(route, json=body))
    assert list(fields) == ["tuner.algorithm"]
    assert "lists names: use tpe" in fields["tuner.algorithm"]


def test_missing_data_is_named(client: TestClient) -> None:
    body = seed()
    del body["data"]
    assert fields_of(client.post("/v1/jobs", json=body)) == {"data": "is required"}


def test_bad_classification_labels_name_their_section(client: TestClient) -> None:
    body = changed(classifier(), "data.validation.y", [0, 1, 2, 0])
    fields = fields_of(client.post("/v1/jobs", json=body))
    assert "1 labels are not among the classes of the training rows: row 2 (2)" in fields["data.validation.y"]


def test_several_problems_are_all_reported(client: TestClient) -> None:
    body = changed(changed(seed(), "model.foo", 1), "tuner.bar", 2)
    assert {"model.foo", "tuner.bar"} <= set(fields_of(client.post("/v1/jobs", json=body)))


@pytest.mark.parametrize(
    "raw",
    [b'{"task": ', b'{"task": "regression",}', b"{'task': 'regression'}", b'{"task": "regression"} trailing'],
)
def test_malformed_json_is_a_422_that_says_so(client: TestClient, raw: bytes) -> None:
    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    fields = fields_of(response)
    assert list(fields) == ["body"]
    assert fields["body"].startswith("the body is not valid JSON")
    assert "at character" in fields["body"]


@pytest.mark.parametrize("raw", [b"[]", b'"job"', b"null"])
def test_json_that_is_not_an_object_is_a_422_on_the_body(client: TestClient, raw: bytes) -> None:
    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert list(fields_of(response)) == ["body"]


def test_nan_in_a_hyperparameter_is_a_422(client: TestClient) -> None:
    # Python's json parser, and so FastAPI, accepts NaN; the response could not even carry it back.
    raw = json.dumps(changed(seed(), "optimizer.learning_rate", float("nan"))).encode()
    assert b"NaN" in raw
    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert "finite" in fields_of(response)["optimizer.learning_rate"]


def test_a_body_over_the_size_limit_is_a_413(client: TestClient) -> None:
    body = changed(seed(), "name", "x" * 100)
    body["data"]["train"] = {"x": [[0.5, 0.25]] * 300, "y": [0.5] * 300}
    raw = json.dumps(body).encode()
    assert len(raw) > LIMITS.max_body_bytes
    error = error_of(client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"}), 413)
    assert error["code"] == "body_too_large"
    assert str(LIMITS.max_body_bytes) in error["message"]


def test_a_streamed_body_over_the_size_limit_is_a_413(client: TestClient) -> None:
    # Without Content-Length (chunked) the bytes are counted as they arrive.
    def chunks() -> Any:
        yield b'{"task": "regression", "name": "'
        for _ in range(10):
            yield b"x" * 1_000
        yield b'"}'

    response = client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {name.lower() for name in response.request.headers}
    assert error_of(response, 413)["code"] == "body_too_large"


def test_a_body_within_the_size_limit_is_validated_not_refused(client: TestClient) -> None:
    raw = json.dumps(changed(seed(), "model.foo", 1)).encode()
    assert len(raw) < LIMITS.max_body_bytes
    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert "model.foo" in fields_of(response)


@pytest.mark.parametrize(
    ("path", "value", "field", "text"),
    [
        ("tuner.max_trials", 51, "tuner.max_trials", "trials 51 is over this service's limit of 50"),
        ("tuner.executions_per_trial", 4, "tuner.executions_per_trial", "limit of 3"),
        ("training.epochs", 1_001, "training.epochs", "epochs 1001 is over this service's limit of 1000"),
    ],
)
def test_a_request_over_a_hard_limit_is_a_422_naming_field_and_limit(
    client: TestClient, path: str, value: int, field: str, text: str
) -> None:
    fields = fields_of(client.post("/v1/jobs", json=changed(seed(), path, value)))
    assert fields == {field: fields[field]}
    assert text in fields[field]


def test_the_default_trial_limit_applies_without_configuration() -> None:
    defaults = Limits.model_construct()
    app = _app(defaults)
    body = changed(seed(), "tuner.max_trials", defaults.max_trials + 1)
    fields = fields_of(TestClient(app).post("/v1/jobs", json=body))
    assert f"limit of {defaults.max_trials}" in fields["tuner.max_trials"]


def test_create_app_settings_limits_apply_to_requests() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", limits=LIMITS, auth="off")
    app = create_app(settings)
    app.state.store = JobStore(_NoRedis())  # type: ignore[arg-type]
    body = changed(seed(), "tuner.max_trials", LIMITS.max_trials + 1)
    response = TestClient(app, raise_server_exceptions=False).post("/v1/jobs", json=body)
    assert "tuner.max_trials" in fields_of(response)


@pytest.mark.parametrize("cursor", ["garbage", "1:2", "00000000000000000001:not-a-uuid", ""])
def test_a_cursor_not_handed_out_is_a_422(client: TestClient, cursor: str) -> None:
    fields = fields_of(client.get("/v1/jobs", params={"cursor": cursor}))
    assert list(fields) == ["cursor"]
    assert "next_cursor" in fields["cursor"]


@pytest.mark.parametrize(
    ("query", "field"),
    [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"status": "sleeping"}, "status")],
)
def test_bad_list_parameters_are_a_422(client: TestClient, query: dict[str, Any], field: str) -> None:
    assert field in fields_of(client.get("/v1/jobs", params=query))


def test_an_unreachable_job_store_is_a_503_not_a_500() -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{_closed_port()}/0", auth="off")
    response = TestClient(create_app(settings), raise_server_exceptions=False).get(f"/v1/jobs/{uuid.uuid4()}")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


# --- requests a worker could not survive: 422 before anything is stored ---------------------------------

ROOMY = Limits.model_construct(
    max_body_bytes=64 * 1024 * 1024
)  # the default limits, with room for big bodies


@pytest.fixture(scope="module")
def roomy() -> TestClient:
    return TestClient(_app(ROOMY))


def multiclass() -> dict[str, Any]:
    return changed(classifier(), "task", "multiclass_classification")


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (
            changed(
                changed(seed(), "tuner.algorithm", "grid"),
                "model.dropout",
                {"min": 0, "max": 0.5, "step": 1e-12},
            ),
            "model.dropout",
            "500000000001 values",
        ),
        (
            changed(seed(), "optimizer.learning_rate", {"min": 1e-300, "max": 1e300, "step": 1e-300}),
            "optimizer.learning_rate",
            "more values than can be counted",
        ),
        (
            changed(seed(), "optimizer.learning_rate", {"values": [i / 1e7 for i in range(1, 200_001)]}),
            "optimizer.learning_rate.values",
            "200000 values is over this service's limit of 100",
        ),
        (changed(seed(), "tuner.algorithm", "grid"), "tuner.algorithm", "combinations"),
        (changed(seed(), "model.units", {"min": 32, "max": 4096}), "model", "parameters"),
        (changed(seed(), "tuner.factor", 10**400), "tuner.factor", "1.00e+400"),
        (changed(seed(), "tuner.hyperband_iterations", 10**400), "tuner.hyperband_iterations", "1.00e+400"),
        (
            changed(seed(), "training.early_stopping", {"patience": 10**400}),
            "training.early_stopping.patience",
            "e+400",
        ),
        (changed(seed(), "tuner.executions_per_trial", 10**400), "tuner.executions_per_trial", "e+400"),
    ],
    ids=[
        "grid-step-1e-12",
        "step-overflow",
        "200000-values",
        "seed-as-grid",
        "model-too-large",
        "factor",
        "hyperband-iterations",
        "patience",
        "executions",
    ],
)
def test_requests_a_worker_could_not_survive_are_a_422_naming_the_field(
    roomy: TestClient, body: dict[str, Any], field: str, fragment: str
) -> None:
    fields = fields_of(roomy.post("/v1/jobs", json=body))
    assert list(fields) == [field]
    assert fragment in fields[field]
    assert "limit of" in fields[field]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("model.activation", "x" * 10_000_000, "model.activation"),
        ("training.loss", "x" * 10_000_000, "training.loss"),
        ("objective", {"name": "x" * 10_000_000}, "objective.name"),
        ("model.units", {"min": 10**4000, "max": 1}, "model.units"),
    ],
)
def test_a_huge_bad_value_gives_a_small_error_body(
    roomy: TestClient, path: str, value: Any, field: str
) -> None:
    response = roomy.post("/v1/jobs", json=changed(seed(), path, value))
    assert len(response.content) < 2_000, len(response.content)
    fields = fields_of(response)
    assert field in fields
    assert "..." in fields[field]


def test_a_huge_unknown_field_name_gives_a_small_error_body(roomy: TestClient) -> None:
    body = seed()
    body["model"]["k" * 10_000_000] = 1
    response = roomy.post("/v1/jobs", json=body)
    assert len(response.content) < 2_000, len(response.content)
    [(field, message)] = fields_of(response).items()
    assert field.startswith("model.kkkk") and field.endswith("...")
    assert "is not a field" in message


def test_a_body_with_many_bad_values_lists_the_first_fifty(roomy: TestClient) -> None:
    body = seed()
    body["data"]["train"] = {"x": [["a", "b"]] * 10_000, "y": [0] * 10_000}
    response = roomy.post("/v1/jobs", json=body)
    fields = fields_of(response)
    assert len(fields) == 50
    assert "data.train.x[0][0]" in fields
    assert response.json()["error"]["message"].endswith("and 19950 more problems not listed")
    assert len(response.content) < 20_000


# --- ids in paths and methods ---------------------------------------------------------------------------

_A_UUID = "0b0f2a8e-6d1e-4c55-9a51-2f1d1b8c9d10"


@pytest.mark.parametrize(
    "job_id",
    [
        f"{_A_UUID}:trials",  # another Redis key of the same job: it was a 500
        f"{_A_UUID}:data",  # it was a false 503
        "some-id",
        _A_UUID.upper(),
        f"{{{_A_UUID}}}",
        _A_UUID.replace("-", ""),
        "x" * 5_000,
    ],
)
@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("DELETE", ""),
        ("GET", "/trials"),
        ("POST", "/cancel"),
        ("GET", "/artifacts/best-model"),
        ("GET", "/artifacts/best-hyperparameters"),
    ],
)
def test_a_path_id_that_is_not_a_job_id_is_a_404_before_any_lookup(
    client: TestClient, job_id: str, method: str, suffix: str
) -> None:
    error = error_of(client.request(method, f"/v1/jobs/{job_id}{suffix}"), 404)
    assert error["code"] == "job_not_found"
    assert "job ids are UUIDs" in error["message"]
    assert len(error["message"]) < 200


def test_a_well_formed_job_id_is_looked_up(client: TestClient) -> None:
    # The store is one that fails the test when used: a real id goes past the check to the lookup.
    with pytest.raises(AssertionError, match="Redis was used"):
        client.get(f"/v1/jobs/{_A_UUID}")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/jobs", "GET, POST"),
        ("DELETE", "/v1/jobs", "GET, POST"),
        ("GET", f"/v1/jobs/{_A_UUID}/cancel", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_a_405_carries_allow_with_every_method_of_the_path(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert response.headers["allow"] == allow


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/jobs/validate"])
@pytest.mark.parametrize(
    ("tuner", "field", "fragment"),
    [
        ({"stop_when": {}}, "tuner.stop_when", "give objective_reaches (a number), no_improvement_trials"),
        ({"stop_when": {"no_improvement_trials": 0}}, "tuner.stop_when.no_improvement_trials", "equal to 1"),
        ({"stop_when": {"no_improvement_trials": 2.5}}, "tuner.stop_when.no_improvement_trials", "integer"),
        ({"stop_when": {"objective_reaches": "high"}}, "tuner.stop_when.objective_reaches", "number"),
        ({"stop_when": {"objective_reaches": 1, "patience": 2}}, "tuner.stop_when.patience", "not a field"),
        (
            {"enqueue": [{"activation": "selu"}]},
            "tuner.enqueue[0].activation",
            "choose from ['relu', 'tanh']",
        ),
        ({"enqueue": [{}, {"unit_0": 8}]}, "tuner.enqueue[1].unit_0", "is not a hyperparameter of this job"),
        ({"enqueue": [{"dropout": 0.35}]}, "tuner.enqueue[0].dropout", "give a number from 0.0 to 0.3"),
        ({"enqueue": [{}] * 13}, "tuner.enqueue", "13 entries, more than tuner.max_trials (12)"),
    ],
)
def test_bad_completion_criteria_and_enqueued_trials_are_a_422_on_submit_and_dry_run(
    client: TestClient, path: str, tuner: dict[str, Any], field: str, fragment: str
) -> None:
    body = classifier()
    body["tuner"].update(tuner)
    fields = fields_of(client.post(path, json=body))
    assert list(fields) == [field]
    assert fragment in fields[field]


def test_an_infinite_objective_target_is_a_422(client: TestClient) -> None:
    # JSON has no infinity; Python's parser reads the literal as it reads NaN.
    text = json.dumps(changed(classifier(), "tuner.stop_when", {"objective_reaches": 1})).replace(
        '"objective_reaches": 1', '"objective_reaches": Infinity'
    )
    for path in ("/v1/jobs", "/v1/jobs/validate"):
        response = client.post(path, content=text, headers={"Content-Type": "application/json"})
        fields = fields_of(response)
        assert list(fields) == ["tuner.stop_when.objective_reaches"], fields
