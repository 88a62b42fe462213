"""The first step of every chain: find the policy this call runs under.

Not a guard that refuses: it resolves the matching rules once and puts the result on the call, so
every guard after it reads one ``ResolvedPolicy`` instead of evaluating rules itself.
"""

from __future__ import annotations

from gateway.core import CallNext, ToolCall, ToolResult
from gateway.guards.stage import GuardDeps, Resolver, Stage


class Resolve:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        return await call_next(call.with_changes(policy=self.resolver(call)))


def _build(deps: GuardDeps) -> Resolve:
    return Resolve(deps.resolver)


STAGE = Stage("resolve", _build)
