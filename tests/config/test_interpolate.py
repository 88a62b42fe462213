from __future__ import annotations

import pytest

from gateway.config import expand, interpolate

ENV = {"HOST": "db.internal", "EMPTY": "", "TOKEN": "s3cr3t-t0ken-value"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${HOST}", "db.internal"),
        ("https://${HOST}:5432/x", "https://db.internal:5432/x"),
        ("${HOST}-${TOKEN}", "db.internal-s3cr3t-t0ken-value"),
        ("${MISSING:-fallback}", "fallback"),
        ("${MISSING:-}", ""),
        ("${EMPTY:-fallback}", "fallback"),  # `:-` as in sh: unset or empty
        ("${HOST:-fallback}", "db.internal"),
        ("${MISSING:-a:-b c}", "a:-b c"),
        ("${EMPTY}", ""),
        ("$${HOST}", "${HOST}"),
        ("cost: $5 and $HOST", "cost: $5 and $HOST"),
        ("$$", "$$"),
        ("a$${b}${HOST}", "a${b}db.internal"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    result, problems, _ = expand(text, ENV)
    assert problems == []
    assert result == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("${MISSING}", "environment variable MISSING is not set"),
        ("x ${OPEN", "unterminated '${'"),
        ("${1ABC}", "invalid reference '${1ABC}'"),
        ("${A B}", "invalid reference '${A B}'"),
        ("${}", "invalid reference '${}'"),
    ],
)
def test_expand_problems(text: str, problem: str) -> None:
    _, problems, referenced = expand(text, ENV)
    assert referenced
    assert len(problems) == 1
    assert problem in problems[0]


def test_expand_reports_every_missing_variable() -> None:
    _, problems, _ = expand("${A}/${B}", {})
    assert problems == ["environment variable A is not set", "environment variable B is not set"]


def test_escape_alone_is_not_a_reference() -> None:
    assert expand("$${X}", {}) == ("${X}", [], False)


def test_interpolate_walks_tables_and_lists_but_not_keys() -> None:
    data = {
        "gateway": {"port": 8080, "enabled": True, "clients": [{"name": "a", "key": "${TOKEN}"}]},
        "servers": {"${HOST}": {"args": ["--host", "${HOST}"], "env": {"${KEY}": "v"}}},
    }
    result = interpolate(data, ENV)
    assert result.problems == []
    assert result.data == {
        "gateway": {"port": 8080, "enabled": True, "clients": [{"name": "a", "key": "s3cr3t-t0ken-value"}]},
        "servers": {"${HOST}": {"args": ["--host", "db.internal"], "env": {"${KEY}": "v"}}},
    }
    assert result.expanded == {("gateway", "clients", 0, "key"), ("servers", "${HOST}", "args", 1)}
    assert result.failed == frozenset()


def test_interpolate_collects_all_problems_and_keeps_failed_text() -> None:
    data = {"a": "${X}", "b": ["${Y}", "ok"], "c": {"d": "${HOST}"}}
    result = interpolate(data, ENV)
    assert result.problems == [
        (("a",), "environment variable X is not set"),
        (("b", 0), "environment variable Y is not set"),
    ]
    assert result.data == {"a": "${X}", "b": ["${Y}", "ok"], "c": {"d": "db.internal"}}
    assert result.failed == {("a",), ("b", 0)}


def test_interpolate_does_not_mutate_its_input() -> None:
    data = {"a": ["${HOST}"]}
    interpolate(data, ENV)
    assert data == {"a": ["${HOST}"]}
