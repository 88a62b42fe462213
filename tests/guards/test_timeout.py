"""Timeout bounds each attempt and says what a timeout means: retryable, or outcome unknown.

No test waits for real time: the guard's own limit is injected as a cancel scope that is already
cancelled, so the attempt times out at its first await.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from gateway.core import ManualClock, ToolCall, ToolResult, build_chain
from gateway.core import errors as e
from gateway.guards.classify import Classify
from gateway.guards.timeout import Timeout, TimeoutSettings
from gateway.guards.traits import Traits
from tests.calls import policy_of, tool_call

pytestmark = pytest.mark.anyio

OK = ToolResult.of_text("ok")


def _call(idempotent: bool, timeout_s: float | None = 5.0, **changes: Any) -> ToolCall:
    policy = policy_of(traits=Traits(idempotent=idempotent), timeout=TimeoutSettings(timeout_s))
    return tool_call("crm", "create_order", {"sku": "A1"}, policy=policy, **changes)


class Recorder:
    """A scripted terminal: records each call, then raises, hangs, or answers."""

    def __init__(self, outcome: ToolResult | e.GatewayError | None) -> None:
        self.outcome = outcome
        self.calls: list[ToolCall] = []

    async def __call__(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        if self.outcome is None:
            await anyio.Event().wait()  # an upstream that never answers
        if isinstance(self.outcome, e.GatewayError):
            raise self.outcome
        assert self.outcome is not None
        return self.outcome


class ExpiredLimit:
    """Stands in for ``anyio.move_on_after``: records the limit and returns a scope already past it."""

    def __init__(self) -> None:
        self.limits: list[float] = []

    def __call__(self, seconds: float) -> anyio.CancelScope:
        self.limits.append(seconds)
        scope = anyio.CancelScope()
        scope.cancel()
        return scope


def _never_used(seconds: float) -> anyio.CancelScope:
    raise AssertionError("no time limit without timeout_s")


@pytest.mark.parametrize(
    ("idempotent", "expected"), [(True, e.UpstreamTimeout), (False, e.OutcomeUnknown)], ids=["idem", "non"]
)
async def test_the_guards_own_limit(idempotent: bool, expected: type[e.GatewayError]) -> None:
    clock, limit, upstream = ManualClock(), ExpiredLimit(), Recorder(None)
    chain = build_chain([Timeout(clock, time_limit=limit)], upstream)
    with anyio.fail_after(5), pytest.raises(expected) as caught:
        await chain(_call(idempotent))
    assert limit.limits == [5.0]
    assert len(upstream.calls) == 1
    assert caught.value.details["timeout_s"] == 5.0
    assert caught.value.retryable is idempotent


@pytest.mark.parametrize(
    ("idempotent", "expected"), [(True, e.UpstreamTimeout), (False, e.OutcomeUnknown)], ids=["idem", "non"]
)
async def test_a_timeout_reported_by_the_upstream_layer(
    idempotent: bool, expected: type[e.GatewayError]
) -> None:
    reported = e.UpstreamTimeout("crm did not answer in time")
    chain = build_chain([Timeout(ManualClock())], Recorder(reported))
    with pytest.raises(expected) as caught:
        await chain(_call(idempotent))
    if idempotent:
        assert caught.value is reported
    else:
        assert caught.value.__cause__ is reported
        assert "crm did not answer in time" in caught.value.message


async def test_outcome_unknown_says_to_check_state_and_is_not_retryable() -> None:
    chain = build_chain([Timeout(ManualClock())], Recorder(e.UpstreamTimeout("slow")))
    with pytest.raises(e.OutcomeUnknown) as caught:
        await chain(_call(idempotent=False, timeout_s=None))
    assert not caught.value.retryable
    assert "check the current state before trying again" in caught.value.hint.lower()
    assert caught.value.details["idempotent"] is False


async def test_a_tools_own_timed_out_text_is_treated_the_same() -> None:
    clock = ManualClock()
    upstream = Recorder(ToolResult.of_text("Error: request timed out after 30s", is_error=True))
    chain = build_chain([Timeout(clock), Classify(clock)], upstream)
    with pytest.raises(e.OutcomeUnknown) as caught:
        await chain(_call(idempotent=False))
    assert isinstance(caught.value.__cause__, e.UpstreamTimeout)
    assert caught.value.details["matched"] == "phrase:timeout"


async def test_the_deadline_travels_down_to_the_upstream_layer() -> None:
    clock = ManualClock()
    upstream = Recorder(OK)
    chain = build_chain([Timeout(clock)], upstream)
    assert await chain(_call(idempotent=True, timeout_s=2.5)) is OK
    assert upstream.calls[0].deadline == clock.monotonic() + 2.5


async def test_an_earlier_deadline_from_outside_wins() -> None:
    clock, limit = ManualClock(), ExpiredLimit()
    chain = build_chain([Timeout(clock, time_limit=limit)], Recorder(None))
    with anyio.fail_after(5), pytest.raises(e.UpstreamTimeout):
        await chain(_call(idempotent=True, timeout_s=10.0, deadline=clock.monotonic() + 1.0))
    assert limit.limits == [1.0]


async def test_without_timeout_s_the_call_is_passed_on_unchanged() -> None:
    upstream = Recorder(OK)
    chain = build_chain([Timeout(ManualClock(), time_limit=_never_used)], upstream)
    call = _call(idempotent=False, timeout_s=None)
    assert await chain(call) is OK
    assert upstream.calls == [call]


async def test_a_deadline_already_passed_is_never_sent() -> None:
    clock = ManualClock()
    upstream = Recorder(OK)
    chain = build_chain([Timeout(clock, time_limit=_never_used)], upstream)
    with pytest.raises(e.UpstreamTimeout) as caught:  # not outcome_unknown: nothing ran
        await chain(_call(idempotent=False, deadline=clock.monotonic() - 0.1))
    assert caught.value.details["sent"] is False
    assert upstream.calls == []


async def test_a_cancellation_from_outside_is_not_a_timeout() -> None:
    upstream = Recorder(None)
    chain = build_chain([Timeout(ManualClock())], upstream)  # the real move_on_after, 60 s
    with anyio.fail_after(5), anyio.CancelScope() as outer:
        outer.cancel()
        await chain(_call(idempotent=False, timeout_s=60.0))
    assert outer.cancelled_caught
    assert len(upstream.calls) == 1
