"""Timeout: a per-tool time limit on one attempt, and what a timeout means for the agent."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from gateway.config.models import Seconds
from gateway.config.units import ExplainView, Key, Rows, Unit
from gateway.core import CallNext, Clock, ToolCall, ToolResult
from gateway.core.errors import OutcomeUnknown, UpstreamTimeout
from gateway.guards.stage import GuardDeps, Stage
from gateway.guards.traits import TRAITS

TimeLimit = Callable[[float], anyio.CancelScope]
"""Makes the cancel scope that bounds an attempt (``anyio.move_on_after`` in production; tests
inject a scope that is already cancelled, so no test waits for real time)."""


@dataclass(frozen=True, slots=True)
class TimeoutSettings:
    timeout_s: float | None = None
    """None: the server's own ``timeout_s`` from servers.toml."""


def _rows(settings: TimeoutSettings, view: ExplainView) -> Rows:
    return [("timeout_s", "server default" if settings.timeout_s is None else f"{settings.timeout_s:g}")]


TIMEOUT: Unit[TimeoutSettings] = Unit(
    name="timeout",
    default=TimeoutSettings(),
    keys={"timeout_s": Key(Seconds, "Time limit of one attempt (default: the server's timeout_s).")},
    rows=_rows,
)


class Timeout:
    """Bounds each attempt by the policy's ``timeout_s`` and says what a timeout means.

    Changes: when the policy's ``timeout_s`` is set, the attempt runs under that limit and the call passed
    on carries ``deadline`` (the earlier of now + ``timeout_s`` and any deadline already set), which
    the upstream layer uses for its own request timeout. Refuses: when the limit passes, or the layers
    below report ``upstream_timeout``, an idempotent tool (per policy) gets ``upstream_timeout``
    (retryable) and any other tool gets ``outcome_unknown`` (not retryable: the call may have taken
    effect, so the agent must check state before trying again, and Retry never repeats it).

    Keys on: ``timeout_s`` and whether the tool is idempotent (``traits``).

    Position: below retry and the circuit breaker, so each attempt gets its own limit and a timeout
    counts as one upstream failure; above classify, so a tool's own "timed out" text gets the same
    idempotency treatment as the gateway's limit.
    """

    def __init__(self, clock: Clock, *, time_limit: TimeLimit = anyio.move_on_after) -> None:
        self.clock = clock
        self.time_limit = time_limit

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        limit = call.policy.of(TIMEOUT).timeout_s
        if limit is None:
            return await self._attempt(call, call_next, None)
        now = self.clock.monotonic()
        deadline = now + limit if call.deadline is None else min(now + limit, call.deadline)
        if deadline <= now:
            # Nothing was sent, so the outcome is known: the call did not run.
            raise UpstreamTimeout(
                f"the deadline for {call.server} tool {call.tool!r} passed before the call was sent",
                details={"timeout_s": limit, "sent": False},
            )
        return await self._attempt(call.with_changes(deadline=deadline), call_next, deadline - now)

    async def _attempt(self, call: ToolCall, call_next: CallNext, seconds: float | None) -> ToolResult:
        idempotent = call.policy.of(TRAITS).is_idempotent(call.annotations)
        try:
            if seconds is None:
                return await call_next(call)
            with self.time_limit(seconds):
                return await call_next(call)
        except UpstreamTimeout as exc:  # reported by the layers below: the pool, or classify
            if idempotent:
                raise
            raise _unknown(exc.message, exc.details) from exc
        # Only our own scope lands here; a cancellation from outside propagates through it.
        details = {"timeout_s": call.policy.of(TIMEOUT).timeout_s, "limit_s": round(seconds, 3)}
        message = f"{call.server} tool {call.tool!r} did not answer within {seconds:g}s"
        if idempotent:
            raise UpstreamTimeout(message, details=details)
        raise _unknown(message, details)


def _unknown(message: str, details: Mapping[str, Any]) -> OutcomeUnknown:
    return OutcomeUnknown(
        f"{message}; it may or may not have taken effect",
        details={**details, "idempotent": False},
    )


def _build(deps: GuardDeps) -> Timeout:
    return Timeout(deps.clock)


STAGE = Stage("timeout", _build, TIMEOUT)
