"""One way for unit tests to make a ``ToolCall``: the fields a test does not care about get defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core import Caller, ResolvedPolicy, ToolCall, ToolResult
from gateway.pipeline import UNITS

_UNITS = {unit.name: unit for unit in UNITS}


def policy_of(**settings: Any) -> ResolvedPolicy:
    """A resolved policy with these units' settings, by unit name: ``policy_of(retry=RetrySettings())``."""
    policy = ResolvedPolicy()
    for name, value in settings.items():
        policy = policy.set(_UNITS[name], value)
    return policy


def tool_call(
    server: str = "crm",
    tool: str = "get_customer",
    arguments: Mapping[str, Any] | None = None,
    *,
    principal: str = "agent",
    session: str = "s1",
    request_id: str = "r1",
    policy: ResolvedPolicy | None = None,
    **changes: Any,
) -> ToolCall:
    return ToolCall(
        server=server,
        tool=tool,
        exposed_name=f"{server}__{tool}",
        arguments=arguments if arguments is not None else {"customer_id": "C000001"},
        caller=Caller(principal=principal, session_key=session),
        request_id=request_id,
        policy=policy or ResolvedPolicy(),
        **changes,
    )


class Recorder:
    """A terminal standing in for the upstream: answers with one fixed result and records every
    call that reached it, so a test can prove a refused call never did."""

    def __init__(self, result: ToolResult | None = None) -> None:
        self.result = result or ToolResult.of_text("ok")
        self.calls: list[ToolCall] = []

    async def __call__(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        return self.result
