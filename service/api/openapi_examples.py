"""Examples for the OpenAPI document, made from the contract's example requests (`examples/*.json`).

The requests are read from the checkout's `examples/` (the copy of ../shared/examples that
tests/unit/test_examples.py keeps identical); an install without them (the API image copies only
`service/` and `worker/`) documents no examples rather than failing. Each answer is what the service's own
code makes of a request, so an example can never drift from what the API answers.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from service.api.job_parsing import parse_job
from service.api.job_service import view_to_public
from service.core.errors import InvalidRequest
from service.core.records import JobRecord
from service.core.settings import Limits
from service.core.states import JobStatus
from service.core.store import JobView

log = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
# What each contract example shows, in the order /docs lists them.
_SUMMARIES = {
    "xor-seed.json": "XOR regression: the seed tutorial's random search (10 trials x 2 executions)",
    "xor-classifier.json": "XOR as a binary classifier: Bayesian search, 2 trials in parallel",
}
# Fixed, so the document is the same on every start.
_JOB_ID = "3f1c9a52-8d3e-4b7a-9c21-5e6f7a8b9c0d"
_CREATED_AT = "2026-01-15T09:30:00Z"


def load_requests(directory: Path = EXAMPLES_DIR) -> dict[str, dict[str, Any]]:
    """The example requests by file name: those `_SUMMARIES` describes, as found in `directory`."""
    found: dict[str, dict[str, Any]] = {}
    for name in _SUMMARIES:
        path = directory / name
        try:
            found[name] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log.warning("OpenAPI example %s not used: %s", path, exc)
    return found


def request_examples(requests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """OpenAPI `examples` of a job request body."""
    return {
        name.removesuffix(".json"): {"summary": _SUMMARIES[name], "value": body}
        for name, body in requests.items()
    }


def job_example(body: dict[str, Any]) -> dict[str, Any]:
    """The job resource POST /v1/jobs answers for `body` (the accepted job, no trial run yet), as JSON.

    Raises InvalidRequest or BadRequest if `body` is not a valid job.
    """
    job = parse_job(json.dumps(body).encode(), Limits())
    record = JobRecord.model_validate(
        {
            "id": _JOB_ID,
            "status": JobStatus.QUEUED,
            "spec": job.spec.model_dump(mode="json"),
            "created_at": _CREATED_AT,
            "data": job.plan,
        }
    )
    public: dict[str, Any] = view_to_public(JobView(record, Counter())).model_dump(mode="json")
    return public


def invalid_objective_example(body: dict[str, Any]) -> dict[str, Any] | None:
    """The 422 body of `body` with a misspelt objective: the service's own words for it."""
    wrong = {**body, "objective": {**body.get("objective", {}), "name": "val_acuracy"}}
    try:
        parse_job(json.dumps(wrong).encode(), Limits())
    except InvalidRequest as exc:
        fields = [{"field": p.field, "message": p.message} for p in exc.fields]
        return {"error": {"code": exc.code, "message": exc.message, "fields": fields}}
    return None


def document_examples(schema: dict[str, Any], requests: dict[str, dict[str, Any]]) -> None:
    """Add the examples to `schema` (the OpenAPI document) in place: the requests on POST /v1/jobs, the job
    one of them makes on its 202 and on GET /v1/jobs/{job_id}, a misspelt objective on its 422."""
    if not requests:
        return
    create = schema["paths"]["/v1/jobs"]["post"]
    create["requestBody"]["content"]["application/json"]["examples"] = request_examples(requests)
    name = "xor-classifier.json" if "xor-classifier.json" in requests else next(iter(requests))
    try:
        job = job_example(requests[name])
    except Exception as exc:  # an example the service refuses is the examples' test's failure, not /docs'
        log.warning("OpenAPI example %s is not a valid job: %s", name, exc)
        return
    _set_example(create["responses"]["202"], job)
    _set_example(schema["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["200"], job)
    if (invalid := invalid_objective_example(requests[name])) is not None:
        _set_example(create["responses"]["422"], invalid)


def _set_example(response: dict[str, Any], value: dict[str, Any]) -> None:
    response.setdefault("content", {}).setdefault("application/json", {})["example"] = value
