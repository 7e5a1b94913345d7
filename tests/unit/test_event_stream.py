"""The event-stream reader on canned bytes, as GET /v1/jobs/{id}/events sends them (notes: EVENTS_FORMAT)."""

from __future__ import annotations

import pytest

from service.client.event_stream import Event, events_of, lines_of

STREAM = (
    b": keep-alive\n"
    b"id: 1733350000000-0\n"
    b"event: job.status\n"
    b'data: {"job_id": "j", "time": "2026-12-04T21:00:00Z", "status": "running", "error": null}\n'
    b"\n"
    b": keep-alive\n"
    b"\n"
    b"id: 1733350000001-0\r\n"
    b"event: trial.epoch\r\n"
    b'data: {"job_id": "j", "trial_id": "03", "epoch": 4, "metrics": {"loss": 0.5}}\r\n'
    b"\r\n"
    b"id: 1733350000002-0\r"
    b"event: job.best\r"
    b'data: {"job_id": "j", "trial_id": "03", "objective_value": 0.12, "note": "\xc3\xa9t\xc3\xa9"}\r'
    b"\r"
    b"id: 1733350000003-0\n"
    b"event: job.status\n"
    b'data: {"job_id": "j", "status": "succeeded", "error": null}\n'
    b"\n"
)


def parse(chunks: list[bytes]) -> list[Event]:
    return list(events_of(lines_of(chunks)))


def test_a_stream_gives_its_events_in_order_with_types_ids_and_json_data() -> None:
    events = parse([STREAM])
    assert [(e.type, e.id) for e in events] == [
        ("job.status", "1733350000000-0"),
        ("trial.epoch", "1733350000001-0"),
        ("job.best", "1733350000002-0"),
        ("job.status", "1733350000003-0"),
    ]
    assert events[0].payload()["status"] == "running"
    assert events[1].payload()["metrics"] == {"loss": 0.5}
    assert events[2].payload()["note"] == "été"
    assert events[3].payload()["status"] == "succeeded"


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_the_same_events_whatever_the_chunks_are_cut(size: int) -> None:
    """Chunks cut anywhere: inside a line, between CR and LF, inside a UTF-8 character."""
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert parse(chunks) == parse([STREAM])


def test_every_cut_in_two_gives_the_same_events() -> None:
    whole = parse([STREAM])
    for cut in range(len(STREAM) + 1):
        assert parse([STREAM[:cut], STREAM[cut:]]) == whole, cut


def test_multi_line_data_joins_with_newlines_and_one_leading_space_is_dropped() -> None:
    events = parse([b"data:first\ndata:  second\n\n"])
    assert events == [Event("message", "first\n second", None)]


def test_an_event_without_data_is_not_dispatched_and_the_last_id_carries_over() -> None:
    events = parse([b"id: 7\nevent: nothing\n\nevent: x\ndata: {}\n\n"])
    assert events == [Event("x", "{}", "7")]


def test_comments_and_unknown_fields_are_ignored_and_an_unfinished_event_is_dropped() -> None:
    events = parse([b": hello\nretry: 10\nfoo: bar\ndata: 1\n\ndata: 2\n"])
    assert [e.data for e in events] == ["1"]


def test_payload_refuses_data_that_is_not_a_json_object() -> None:
    with pytest.raises(ValueError):
        Event("job.status", "not json", None).payload()
    with pytest.raises(ValueError, match="not a JSON object"):
        Event("job.status", "[1, 2]", None).payload()
