"""A job body from bytes to a spec and stored data: the same 422s FastAPI gave, and 400s for unreadable
bodies. The API runs this in a thread or a parse process; here it is called directly."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.api import job_parsing
from service.api.job_parsing import MAX_JSON_DEPTH, json_depth, parse_job
from service.core import data_codec
from service.core.errors import BadRequest, InvalidRequest, KtuneError
from service.core.settings import Limits
from service.core.spec import JobCreate, JobSpec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def rejection(body: bytes, limits: Limits | None = None) -> KtuneError:
    with pytest.raises(KtuneError) as raised:
        parse_job(body, limits or Limits())
    return raised.value


@pytest.mark.parametrize("name", ["xor-seed", "xor-classifier"])
def test_a_valid_body_gives_the_resolved_spec_without_data_and_the_stored_data(name: str) -> None:
    body = example(name)
    parsed = parse_job(raw(body), Limits())
    expected = JobCreate.model_validate(body).resolved()
    assert type(parsed.spec) is JobSpec
    assert parsed.spec.model_dump() == expected.model_dump(exclude={"data"})
    assert parsed.spec.objective is not None and parsed.spec.training.loss is not None  # resolved
    assert parsed.data is not None
    stored = data_codec.decode(parsed.data, expected.task)
    assert stored.plan == parsed.plan and stored.arrays is not None
    np.testing.assert_array_equal(stored.arrays.x_train, np.asarray(body["data"]["train"]["x"], np.float32))
    validation = np.asarray(body["data"]["validation"]["x"], np.float32)
    np.testing.assert_array_equal(stored.arrays.x_val, validation)


def test_a_utf8_byte_order_mark_is_allowed() -> None:
    assert parse_job(b"\xef\xbb\xbf" + raw(example("xor-seed")), Limits()).spec.task.value == "regression"


def test_the_fields_of_a_422_come_in_the_order_of_the_request_model() -> None:
    body = example("xor-seed")
    body["tuner"]["bogus"] = 1
    body["model"]["foo"] = 1
    body["data"]["train"]["x"][1] = [0]
    body["name"] = 7
    error = rejection(raw(body))
    assert isinstance(error, InvalidRequest)
    # data third, as when JobCreate declared it third; the model's fields then the tuner's.
    assert [p.field for p in error.fields] == ["name", "data.train", "model.foo", "tuner.bogus"]


def test_labels_are_still_checked_before_the_objective() -> None:
    body = example("xor-classifier")
    body["data"]["train"]["y"][0] = 7
    body["objective"] = {"name": "val_mean_absolute_error"}
    assert [p.field for p in rejection(raw(body)).fields] == ["data.train.y"]


def test_hard_limits_are_applied_with_the_parse() -> None:
    body = example("xor-seed")
    body["tuner"]["max_trials"] = 51
    error = rejection(raw(body), Limits(max_trials=50))
    assert error.status_code == 422
    assert [(p.field, "limit of 50" in p.message) for p in error.fields] == [("tuner.max_trials", True)]


@pytest.mark.parametrize(
    ("body", "offset"), [(b'{"name": "\xff"}', 10), (b'{"name": "caf\xc3"}', 13), (b"\x00\xff", 1)]
)
def test_a_body_that_is_not_utf8_is_a_400_naming_the_byte(body: bytes, offset: int) -> None:
    error = rejection(body)
    assert isinstance(error, BadRequest)
    assert (error.status_code, error.code) == (400, "body_not_utf8")
    assert f"byte {offset} is invalid" in error.message


def test_utf16_is_not_read_as_json_any_more() -> None:
    assert rejection(json.dumps(example("xor-seed")).encode("utf-16")).code == "body_not_utf8"


def test_an_invalid_byte_after_a_character_cut_between_chunks_is_placed_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(job_parsing, "_CHUNK", 4)
    body = b'{"a"\xc3\xa9\xc3\xa9\xff}'  # chunk 2 ends inside the second two-byte character
    assert "byte 8 is invalid" in rejection(body).message
    assert rejection('{"é": "ü"}'.encode()).status_code == 422  # valid UTF-8 across every cut


def nested(depth: int) -> bytes:
    return b'{"name": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_a_body_nested_too_deep_is_a_400() -> None:
    assert json_depth(nested(MAX_JSON_DEPTH)) == MAX_JSON_DEPTH
    assert rejection(nested(MAX_JSON_DEPTH)).status_code == 422  # deep, but within: a normal 422
    error = rejection(nested(MAX_JSON_DEPTH + 1))
    assert (error.status_code, error.code) == (400, "body_too_deep")
    assert str(MAX_JSON_DEPTH) in error.message


def test_a_very_deep_body_is_a_400_not_a_recursion_error() -> None:
    assert rejection(b"[" * 100_000 + b"]" * 100_000).code == "body_too_deep"
    assert rejection(b"[" * 2_000_000).code == "body_too_deep"  # never closed


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"", 0),
        (b"1", 0),
        (b"{}", 1),
        (b"[[1], [2, [3]]]", 3),
        (b'{"a": "[[[[{{"}', 1),
        (b'{"a": "\\"[[[", "b": []}', 2),
        (b'{"a": "x\\\\", "b": [[1]]}', 3),
        (b'{"a": "\\\\\\"[[", "b": {"c": []}}', 3),
        (b'{"a": "\\n", "b": [1]}', 2),
        ('{"ü": ["[", {"é": "}}}"}]}'.encode(), 3),
    ],
)
def test_json_depth_counts_only_brackets_outside_strings(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth


def test_a_parse_outcome_survives_the_trip_between_processes() -> None:
    parsed = parse_job(raw(example("xor-classifier")), Limits())
    assert pickle.loads(pickle.dumps(parsed)) == parsed
    body = copy.deepcopy(example("xor-seed"))
    body["model"]["foo"] = 1
    for error in (rejection(raw(body)), rejection(b"\xff"), rejection(nested(40))):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error)
        assert (again.status_code, again.code, again.message, again.fields) == (
            error.status_code,
            error.code,
            error.message,
            error.fields,
        )


def fingerprint(body: bytes) -> str | None:
    return parse_job(body, Limits(), fingerprint=True).fingerprint


def test_a_fingerprint_is_made_only_when_asked_for() -> None:
    assert parse_job(raw(example("xor-seed")), Limits()).fingerprint is None
    assert fingerprint(raw(example("xor-seed"))) is not None


def test_bodies_asking_for_the_same_job_have_one_fingerprint() -> None:
    body = example("xor-seed")
    same = copy.deepcopy(body)
    same["tuner"] = dict(reversed(list(same["tuner"].items())))  # another key order
    same["data"]["train"]["x"] = [[float(v) for v in row] for row in same["data"]["train"]["x"]]  # 1.0 for 1
    same["tuner"]["algorithm"] = "random"  # a default, written out
    same["objective"] = {"name": "val_mean_absolute_error"}  # the task's own, direction inferred
    text = json.dumps(same, indent=4).encode()  # other whitespace
    assert fingerprint(text) == fingerprint(raw(body))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("name",), "xor-seed-2"),
        (("training", "epochs"), 101),
        (("tuner", "seed"), 2),
        (("data", "train", "y"), [0, 1, 1, 0.5]),
        (("data", "validation", "x"), [[0, 0], [0, 1], [1, 0], [1, 0.5]]),
    ],
)
def test_any_other_request_has_another_fingerprint(path: tuple[str, ...], value: Any) -> None:
    body = example("xor-seed")
    other = copy.deepcopy(body)
    node = other
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    assert fingerprint(raw(other)) != fingerprint(raw(body))


def test_a_data_set_reference_is_part_of_the_fingerprint() -> None:
    iris = {"task": "multiclass_classification", "data": {"dataset": "iris"}}
    wine = {"task": "multiclass_classification", "data": {"dataset": "wine"}}
    assert fingerprint(raw(iris)) == fingerprint(json.dumps(iris, indent=1).encode())
    assert fingerprint(raw(iris)) != fingerprint(raw(wine))


def test_a_fingerprint_is_of_the_request_not_of_the_split_drawn_for_it() -> None:
    body = example("xor-seed")
    del body["tuner"]["seed"], body["data"]["validation"]
    body["data"].update(validation_split=0.5, shuffle=True)  # a seed is drawn for each parse
    first, second = (parse_job(raw(body), Limits(), fingerprint=True) for _ in range(2))
    assert first.plan is not None and second.plan is not None
    assert first.plan.split.seed != second.plan.split.seed
    assert first.fingerprint == second.fingerprint
