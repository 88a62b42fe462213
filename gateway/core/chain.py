"""The guard interface and the chain builder.

The chain is folded once (at start), never per request: a request pays one function call per guard
and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from gateway.core.call import ToolCall, ToolResult
from gateway.core.errors import UPSTREAM, GatewayError

CallNext = Callable[[ToolCall], Awaitable[ToolResult]]


class Guard(Protocol):
    """A step of the call pipeline.

    A guard refuses by raising a typed ``GatewayError``; it never builds wire responses. To change
    the call it passes a new ``ToolCall`` to ``call_next``; to change the result it returns a new
    ``ToolResult``.
    """

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult: ...


def build_chain(
    guards: Sequence[Guard], terminal: CallNext, *, names: Sequence[str] | None = None
) -> CallNext:
    """Fold ``guards`` (outermost first) around ``terminal`` into one callable.

    With ``names`` (one per guard), every ``GatewayError`` says who raised it (``err.guard``): the
    first step it leaves names it, so an error from below keeps its origin, and one from
    ``terminal`` is the upstream's. Python's exceptions cost nothing until raised, so the happy
    path pays no more for it.
    """
    if names is not None and len(names) != len(guards):
        raise ValueError(f"{len(names)} names for {len(guards)} guards")
    step = terminal if names is None else _named(UPSTREAM, terminal)
    for index in reversed(range(len(guards))):
        step = _bind(guards[index], step, None if names is None else names[index])
    return step


def _bind(guard: Guard, call_next: CallNext, name: str | None) -> CallNext:
    if name is None:

        async def step(call: ToolCall) -> ToolResult:
            return await guard(call, call_next)

        return step

    async def named(call: ToolCall) -> ToolResult:
        try:
            return await guard(call, call_next)
        except GatewayError as err:
            if err.guard is None:
                err.guard = name
            raise

    return named


def _named(name: str, terminal: CallNext) -> CallNext:
    async def step(call: ToolCall) -> ToolResult:
        try:
            return await terminal(call)
        except GatewayError as err:
            if err.guard is None:
                err.guard = name
            raise

    return step
