"""CEL expressions: compiled once with readable errors, evaluated with Python values in and out."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import CelError, compile_expression
from gateway.config.cel import MAX_SOURCE_CHARS


@pytest.mark.parametrize(
    ("source", "activation", "expected"),
    [
        ("args.amount > 100 && client != 'admin'", {"args": {"amount": 150}, "client": "bot"}, True),
        ("args.amount > 100.5", {"args": {"amount": 100}}, False),
        ("args.tags.exists(t, t == 'vip')", {"args": {"tags": ("new", "vip")}}, True),
        ("args.note == null", {"args": {"note": None}}, True),
        ("args.nested.items[1].id", {"args": {"nested": {"items": [{"id": 1}, {"id": 2}]}}}, 2),
        ("args.items.map(i, i * 2)", {"args": {"items": [1, 2]}}, [2, 4]),
        ("{'a': [true, 1.5, 'x', null]}", {}, {"a": [True, 1.5, "x", None]}),
        ("has(args.x) && args.x", {"args": {}}, False),
        ("args['odd-key'] + '!'", {"args": {"odd-key": "hi"}}, "hi!"),
        ("tool.startsWith('get_') || exposed.endsWith('__get')", {"tool": "get_quote", "exposed": "x"}, True),
    ],
)
def test_evaluates_python_values(source: str, activation: dict[str, Any], expected: Any) -> None:
    assert compile_expression(source)(activation) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("args.amount >", "invalid CEL at line 1, column 14: mismatched input '<EOF>' expecting {"),
        ("a == 1 ||| 2", "invalid CEL at line 1, column 10: token recognition error at: '| '"),
        ("args.amont > 1 && argz.x", "unknown variable 'argz' (available: server, tool, exposed, args"),
        ("clinet == 'x'", "did you mean 'client'?"),
        ("", "expected an expression, got an empty string"),
        ("1 + " * MAX_SOURCE_CHARS + "1", f"the limit is {MAX_SOURCE_CHARS}"),
        ("args.a.map(x, args.b.filter(y, y == x))", "may not be nested"),
        ("args.a.all(x, (x > 0 && args.b.exists(y, y)))", "may not be nested"),
        ("args.a.all(x, x // ) a comment\n && args.b.exists(y, y))", "may not be nested"),
    ],
)
def test_compile_errors_are_one_readable_line(source: str, message: str) -> None:
    with pytest.raises(CelError) as info:
        compile_expression(source)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "source",
    [
        "args.a.map(x, x).filter(y, y > 1).size() > 0",  # chained, not nested
        "args.a.exists(x, x == 'map(')",  # a string that looks like a macro
        "type(args.a) == int || type(args.a) == double",  # type names are not variables
        "args.m.all(k, k.startsWith('x')) && args.n.exists_one(v, v == 1)",
    ],
)
def test_compiles(source: str) -> None:
    compile_expression(source)


@pytest.mark.parametrize(
    ("source", "activation", "message"),
    [
        ("args.amount > 1", {"args": {}}, "no such key: 'amount' (test it first with has()"),
        ("args.amount > 1", {"args": {"amount": "x"}}, "No such overload"),
        ("1 / args.n", {"args": {"n": 0}}, "division by zero"),
        ("size(args)", {"args": {"x": {1, 2}}}, "Failed to convert Python object of type set"),
    ],
)
def test_runtime_errors_raise_cel_error(source: str, activation: dict[str, Any], message: str) -> None:
    with pytest.raises(CelError) as info:
        compile_expression(source)(activation)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("source", "variables", "arg_keys"),
    [
        ("args.amount > 1 && client == 'x'", {"args", "client"}, {"amount"}),
        ("args['a-b'] == 1 && args.c.d == 2", {"args"}, {"a-b", "c"}),
        ("has(args.x) && client.contains('args.y')", {"args", "client"}, {"x"}),
        ("size(args) > 1", {"args"}, None),
        ("args.map(k, k == 'x').size() > 0", {"args"}, None),
        ("args.exists(k, k == 'x')", {"args"}, None),
        ("annotations.readOnlyHint", {"annotations"}, set()),
        ("args.x > 1 // then size(args)", {"args"}, {"x"}),
    ],
)
def test_static_analysis_of_what_is_read(source: str, variables: set[str], arg_keys: set[str] | None) -> None:
    expression = compile_expression(source)
    assert expression.variables == variables
    assert expression.arg_keys == (None if arg_keys is None else frozenset(arg_keys))


def test_reads_only_what_it_names() -> None:
    expression = compile_expression("args.amount > 1")
    assert expression({"args": {"amount": 2, "blob": object()}, "session": object()}) is True
