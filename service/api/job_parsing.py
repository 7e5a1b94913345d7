"""A POST /v1/jobs body, from bytes to a validated spec and its encoded data.

`parse_job` is a plain function of bytes, so the API can run it in a thread (small bodies) or in a
separate process (large ones: pydantic holds the GIL while it validates, so a thread alone would still
stall the event loop). It returns the spec without its data and the data in its stored form, so the API
process never holds a large body as Python objects. Its errors are exactly those FastAPI gave when it
parsed the body itself: the same field paths and messages.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from service.api.errors import invalid_request
from service.core.data_plan import DataPlan
from service.core.errors import BadRequest, FieldProblem, InvalidRequest
from service.core.lazy_imports import needed_for
from service.core.settings import Limits
from service.core.spec import JobCreate, JobSpec, check_limits

if TYPE_CHECKING:
    import numpy as np

# Arrays and objects inside one another; a job needs 5 (data.train.x[row][column]).
MAX_JSON_DEPTH = 32

# JobCreate's fields in the order clients have always seen them (its `data` comes after JobSpec's fields
# now): the order of the 422's errors and of the schema in /docs.
FIELD_ORDER = (
    "name",
    "task",
    "data",
    *(name for name in JobSpec.model_fields if name not in ("name", "task")),
)

_CHUNK = 1 << 20
_BRACKETS_AND_QUOTES = b'[]{}"'
_OTHER_BYTES = bytes(b for b in range(256) if b not in _BRACKETS_AND_QUOTES)
_STRING = re.compile(rb'"[^"]*"')


@dataclass(frozen=True)
class ParsedJob:
    """A valid job request: its resolved spec (what is stored and shown), and either inline data's plan and
    stored form, or the request's data-set reference (checked against the data set when it is submitted);
    its `fingerprint` when asked for."""

    spec: JobSpec
    plan: DataPlan | None = None
    data: bytes | None = None
    dataset_request: JobCreate | None = None
    fingerprint: str | None = None


def parse_job(raw: bytes | bytearray, limits: Limits, fingerprint: bool = False) -> ParsedJob:
    """Validate a job body against the request rules and `limits`; with `fingerprint`, note its
    `request_fingerprint` (for an Idempotency-Key; a maximal body takes about 0.1 s more).

    Raises BadRequest (not UTF-8, nested deeper than MAX_JSON_DEPTH) or InvalidRequest (the 422).
    """
    _check_utf8(raw)
    raw = raw.removeprefix(codecs.BOM_UTF8)  # allowed by RFC 8259, and accepted before
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(
            f"the body nests arrays and objects more than {MAX_JSON_DEPTH} deep; a job needs at most 5",
            "body_too_deep",
        )
    try:
        job = JobCreate.model_validate_json(raw)
    except ValidationError:
        # The fast path (pydantic's own JSON parser) words some errors differently: report the
        # reference path's, which raises.
        job = _parse_as_fastapi(raw)
    problems = check_limits(job, limits)
    if problems:
        raise InvalidRequest([FieldProblem(p.field, p.message) for p in problems])
    job = job.resolved()
    printed = request_fingerprint(job) if fingerprint else None
    if job.data.train is None:
        return ParsedJob(job.without_data(), dataset_request=job, fingerprint=printed)
    with needed_for("read a job's inline data"):
        from service.core.job_data import stored_inline
    plan, data = stored_inline(job)
    return ParsedJob(job.without_data(), plan, data, fingerprint=printed)


def request_fingerprint(job: JobCreate) -> str:
    """A hash of what a (resolved) job request asks for, data included: the same for bodies that differ
    only in whitespace, key order, number spelling (1 or 1.0) or fields given at their defaults.

    Not of the job as stored: a split seed drawn at submit time would make every retry differ. Fields at
    their defaults are left out, so a field added to the request later does not change the fingerprint
    of a body without it.
    """
    canonical = job.__pydantic_serializer__.to_json(job, exclude_defaults=True)
    return hashlib.sha256(b"ktune job request 1\0" + canonical).hexdigest()


def parse_job_file(path: str, limits: Limits, fingerprint: bool = False) -> ParsedJob:
    """`parse_job` of the body in the file at `path`.

    The API hands a large body to a parse process this way: pickling it instead would hold the API's
    GIL for about 100 ms per 32 MB, stalling every other request.
    """
    with open(path, "rb") as file:
        raw = file.read()
    return parse_job(raw, limits, fingerprint)


def _parse_as_fastapi(raw: bytes | bytearray) -> JobCreate:
    """The body parsed and validated as FastAPI does for a model parameter; raises its 422 when invalid."""
    errors: list[dict[str, Any]]
    if not raw:
        errors = [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
    else:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            errors = [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        else:
            try:
                return JobCreate.model_validate(value, from_attributes=True)
            except ValidationError as exc:
                errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
                errors.sort(key=_field_position)
    raise invalid_request(errors)


def _field_position(error: dict[str, Any]) -> int:
    """Where the error's top-level field is in FIELD_ORDER; unknown fields (and the body) after them."""
    loc = error["loc"]
    return FIELD_ORDER.index(loc[1]) if len(loc) > 1 and loc[1] in FIELD_ORDER else len(FIELD_ORDER)


def _check_utf8(raw: bytes | bytearray) -> None:
    """Raises BadRequest unless `raw` is UTF-8 (decoded a chunk at a time, so no copy of a large body)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    for start in range(0, max(len(raw), 1), _CHUNK):
        held = len(decoder.getstate()[0])  # the start of a character cut by the previous chunk's end
        try:
            decoder.decode(raw[start : start + _CHUNK], final=start + _CHUNK >= len(raw))
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"the body is not UTF-8 text (byte {start - held + exc.start} is invalid); send JSON "
                "encoded as UTF-8",
                "body_not_utf8",
            ) from exc


def json_depth(raw: bytes | bytearray) -> int:
    """How deep arrays and objects nest in a JSON text (1 for a flat object); brackets in strings don't count.

    Not a parser: for invalid JSON the number is only a bound of what a parser would meet.
    """
    # Escaped backslashes first, then escaped quotes: what remains of each string is quote, text, quote.
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = _STRING.sub(b"", raw.translate(None, _OTHER_BYTES))
    with needed_for("read a job body"):
        import numpy as np
    step = _steps()
    codes = np.frombuffer(marks, dtype=np.uint8)
    level = deepest = 0
    for start in range(0, len(codes), _CHUNK):  # a chunk at a time: a body of brackets is all marks
        part = codes[start : start + _CHUNK]
        steps = step[part]
        levels = level + np.cumsum(steps)
        deepest, level = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


@functools.cache
def _steps() -> np.ndarray:
    """+1 where a byte opens an array or object, -1 where one closes, by byte value."""
    with needed_for("read a job body"):
        import numpy as np
    step = np.zeros(256, dtype=np.int64)
    step[list(b"[{")] = 1
    step[list(b"]}")] = -1
    return step
