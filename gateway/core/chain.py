"""The guard interface and the chain builder.

The chain is folded once per resolved policy (at start and on reload), never per request:
a request pays one function call per guard and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from gateway.core.call import ToolCall, ToolResult

CallNext = Callable[[ToolCall], Awaitable[ToolResult]]


class Guard(Protocol):
    """A step of the call pipeline.

    A guard refuses by raising a typed ``GatewayError``; it never builds wire responses. To change
    the call it passes a new ``ToolCall`` to ``call_next``; to change the result it returns a new
    ``ToolResult``.
    """

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult: ...


def build_chain(guards: Sequence[Guard], terminal: CallNext) -> CallNext:
    """Fold ``guards`` (outermost first) around ``terminal`` into one callable."""
    step = terminal
    for guard in reversed(guards):
        step = _bind(guard, step)
    return step


def _bind(guard: Guard, call_next: CallNext) -> CallNext:
    async def step(call: ToolCall) -> ToolResult:
        return await guard(call, call_next)

    return step
