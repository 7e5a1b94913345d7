"""Domain errors (`service.core.errors`): what an error body may quote of a client's value, and how much."""

from __future__ import annotations

from service.core.errors import (
    FIELD_CHARS,
    MAX_FIELD_PROBLEMS,
    MESSAGE_CHARS,
    QUOTE_CHARS,
    FieldProblem,
    InvalidRequest,
    shorten,
)


def test_shorten_keeps_short_text_and_cuts_long_text_with_an_ellipsis() -> None:
    assert shorten("relu") == "relu"
    assert shorten("x" * QUOTE_CHARS) == "x" * QUOTE_CHARS
    assert shorten("x" * (QUOTE_CHARS + 1)) == "x" * QUOTE_CHARS + "..."
    assert shorten("abcdef", 3) == "abc..."


def test_a_field_problem_caps_its_field_and_message() -> None:
    problem = FieldProblem("model." + "k" * 10_000, "m" * 10_000)
    assert len(problem.field) == FIELD_CHARS + 3 and problem.field.endswith("...")
    assert len(problem.message) == MESSAGE_CHARS + 3 and problem.message.endswith("...")


def test_invalid_request_summarises_every_field_it_lists() -> None:
    err = InvalidRequest([FieldProblem("a", "is wrong"), FieldProblem("b.c", "is missing")])
    assert (err.status_code, err.code) == (422, "invalid_request")
    assert err.message == "The request is invalid: a: is wrong; b.c: is missing"


def test_invalid_request_lists_at_most_fifty_problems_and_counts_the_rest() -> None:
    problems = [FieldProblem(f"x[{i}]", "is not a number") for i in range(MAX_FIELD_PROBLEMS + 7)]
    err = InvalidRequest(problems, unlisted=100)
    assert err.fields == problems[:MAX_FIELD_PROBLEMS]
    assert err.message.endswith(
        f"x[{MAX_FIELD_PROBLEMS - 1}]: is not a number; and 107 more problems not listed"
    )
