"""The chain is folded once, runs guards outermost first, and a refusal short-circuits."""

from __future__ import annotations

import pytest

from gateway.core import CallNext, ToolCall, ToolResult, build_chain
from gateway.core.errors import Forbidden
from tests.calls import tool_call

pytestmark = pytest.mark.anyio


def _call() -> ToolCall:
    return tool_call()


class Recording:
    """A test guard that records when it runs, and can refuse."""

    def __init__(self, name: str, trail: list[str], refuse: bool = False) -> None:
        self.name, self.trail, self.refuse = name, trail, refuse

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        self.trail.append(f"{self.name}:in")
        if self.refuse:
            raise Forbidden(f"{self.name} refused")
        result = await call_next(call.with_changes(attempt=call.attempt + 1))
        self.trail.append(f"{self.name}:out")
        return result


async def test_guards_run_in_order_around_the_terminal() -> None:
    trail: list[str] = []
    seen: list[ToolCall] = []

    async def terminal(call: ToolCall) -> ToolResult:
        trail.append("upstream")
        seen.append(call)
        return ToolResult.of_text("ok")

    chain = build_chain([Recording("a", trail), Recording("b", trail)], terminal)
    result = await chain(_call())
    assert result.text() == "ok"
    assert trail == ["a:in", "b:in", "upstream", "b:out", "a:out"]
    assert seen[0].attempt == 3  # each guard passed on a new, changed call


async def test_a_refusal_short_circuits_and_the_upstream_never_runs() -> None:
    trail: list[str] = []

    async def terminal(call: ToolCall) -> ToolResult:
        trail.append("upstream")
        return ToolResult.of_text("ok")

    chain = build_chain([Recording("a", trail), Recording("b", trail, refuse=True)], terminal)
    with pytest.raises(Forbidden, match="b refused"):
        await chain(_call())
    assert trail == ["a:in", "b:in"]


def test_tool_call_is_immutable() -> None:
    call = _call()
    with pytest.raises(AttributeError):
        call.tool = "refund"  # type: ignore[misc]
