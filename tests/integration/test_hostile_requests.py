"""Requests the workers could not survive are 422s at the API, and odd ids are 404s, with real Redis:
nothing is stored or queued, and a normal job on the same workers succeeds afterwards."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ROOT, wait_job

pytestmark = pytest.mark.integration


def seed() -> dict[str, Any]:
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-seed.json").read_text())
    return body


def _with(path: str, value: Any, body: dict[str, Any] | None = None) -> dict[str, Any]:
    body = body if body is not None else seed()
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return body


def _multiclass_with_classes(count: int) -> dict[str, Any]:
    """One row per class: labels are mapped to classes, so only their number can be too large."""
    body: dict[str, Any] = json.loads((ROOT / "examples" / "xor-classifier.json").read_text())
    body["task"] = "multiclass_classification"
    body["data"] = {
        "train": {"x": [[float(i)] for i in range(count)], "y": [i * 10**12 for i in range(count)]}
    }
    return body


def _string_targets(rows: int) -> dict[str, Any]:
    """A regression on string targets: one problem that counts the rows, not one per row."""
    body = seed()
    body["data"] = {
        "train": {"x": [[float(i)] for i in range(rows)], "y": [f"label {i}" for i in range(rows)]}
    }
    return body


HOSTILE = [
    (
        _with("model.dropout", {"min": 0, "max": 0.5, "step": 1e-12}, _with("tuner.algorithm", "grid")),
        "model.dropout",
    ),
    (
        _with("optimizer.learning_rate", {"min": 1e-300, "max": 1e300, "step": 1e-300}),
        "optimizer.learning_rate",
    ),
    (
        _with("optimizer.learning_rate", {"values": [i / 1e7 for i in range(1, 200_001)]}),
        "optimizer.learning_rate.values",
    ),
    (_multiclass_with_classes(1_001), "data.train.y"),
    (_string_targets(455), "data.train.y"),
    (_with("tuner.factor", 10**400), "tuner.factor"),
    (_with("tuner.hyperband_iterations", 10**400), "tuner.hyperband_iterations"),
    (_with("training.early_stopping", {"patience": 10**400}), "training.early_stopping.patience"),
    (_with("model.activation", "x" * 10_000_000), "model.activation"),
]


def test_hostile_requests_are_refused_then_a_normal_job_succeeds(
    api: httpx.Client, workers: list[str]
) -> None:
    before = api.get("/v1/jobs", params={"limit": 100}).json()["items"]
    for body, field in HOSTILE:
        response = api.post("/v1/jobs", json=body)
        assert response.status_code == 422, (field, response.text[:500])
        assert len(response.content) < 2_000, field
        assert field in {p["field"] for p in response.json()["error"]["fields"]}, response.text[:500]
    assert api.get("/v1/jobs", params={"limit": 100}).json()["items"] == before, "nothing was stored"

    body = _with("tuner.max_trials", 1, _with("training.epochs", 5))
    body["model"].update(hidden_layers=1, units=8)
    response = api.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    # Other keys of the same job: they reached Redis and gave a 500 and a false 503 before.
    for suffix in (":trials", ":data", ":oracle"):
        response = api.get(f"/v1/jobs/{job_id}{suffix}")
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "job_not_found"

    done = wait_job(api, job_id, {"succeeded"}, timeout=240)
    assert done["progress"]["completed"] == 1


def test_a_405_names_the_allowed_methods(api: httpx.Client) -> None:
    response = api.put("/v1/jobs")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
