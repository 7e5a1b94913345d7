"""Server-Sent Events text, as EVENTS_FORMAT (README: Live events) describes it."""

from __future__ import annotations

from service.api.sse import EVENT_ID, KEEP_ALIVE, format_event


def test_an_event_is_id_type_data_and_a_blank_line() -> None:
    text = format_event("1733350000000-0", "trial.started", '{"job_id":"j","trial_id":"03"}')
    assert text == 'id: 1733350000000-0\nevent: trial.started\ndata: {"job_id":"j","trial_id":"03"}\n\n'


def test_data_over_several_lines_gets_a_data_field_each() -> None:
    assert format_event("1-0", "x", "a\nb").endswith("data: a\ndata: b\n\n")


def test_keep_alive_is_a_comment() -> None:
    assert KEEP_ALIVE.startswith(":") and KEEP_ALIVE.endswith("\n\n")


def test_event_ids_are_redis_stream_ids() -> None:
    assert EVENT_ID.fullmatch("1733350000000-0")
    assert not EVENT_ID.fullmatch("1733350000000")
    assert not EVENT_ID.fullmatch("$")
    assert not EVENT_ID.fullmatch("1-0\n")
