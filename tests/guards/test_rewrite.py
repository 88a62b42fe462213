"""Rewrite gives every failure its final form: the operator's hint, or an internal error for a bug."""

from __future__ import annotations

import logging

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from gateway.core import ManualClock, ToolCall, ToolResult, build_chain
from gateway.core import errors as e
from gateway.core.policy import ResolvedPolicy
from gateway.guards.classify import Classify
from gateway.guards.rewrite import Hints, Rewrite
from tests.calls import policy_of, tool_call

pytestmark = pytest.mark.anyio

HINTS = {
    "upstream_rate_limited": "Billing allows 10 calls a minute; wait retry_after_s.",
    "forbidden": "Ask the finance team.",
}


def _call(policy: ResolvedPolicy | None = None) -> ToolCall:
    return tool_call(
        "billing",
        "pay",
        {"invoice": "INV-1"},
        request_id="req-7f3a",
        policy=policy or policy_of(rewrite=Hints(HINTS)),
    )


class Upstream:
    """A scripted terminal: raises the given exception, or returns the given result."""

    def __init__(self, outcome: ToolResult | BaseException) -> None:
        self.outcome = outcome
        self.calls = 0

    async def __call__(self, call: ToolCall) -> ToolResult:
        self.calls += 1
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


async def test_the_policy_hint_replaces_the_default_and_keeps_retry_after() -> None:
    upstream = Upstream(ToolResult.of_text("429 Too Many Requests. Retry-After: 12", is_error=True))
    chain = build_chain([Rewrite(), Classify(ManualClock())], upstream)
    with pytest.raises(e.UpstreamRateLimited) as caught:
        await chain(_call())
    assert caught.value.hint == HINTS["upstream_rate_limited"]
    assert caught.value.retry_after_s == 12.0
    assert caught.value.details["matched"] == "status:429"


async def test_refusals_from_any_guard_get_the_override() -> None:
    chain = build_chain([Rewrite()], Upstream(e.Forbidden("denied by rule no-payments")))
    with pytest.raises(e.Forbidden) as caught:
        await chain(_call())
    assert caught.value.hint == "Ask the finance team."
    assert caught.value.message == "denied by rule no-payments"


async def test_codes_without_an_override_keep_their_hint() -> None:
    chain = build_chain([Rewrite()], Upstream(e.UpstreamError("boom")))
    with pytest.raises(e.UpstreamError) as caught:
        await chain(_call())
    assert caught.value.hint == e.UpstreamError.default_hint


async def test_results_pass_through_untouched() -> None:
    result = ToolResult.of_text("the tool's own complaint", is_error=True)
    chain = build_chain([Rewrite()], Upstream(result))
    assert await chain(_call()) is result


async def test_a_bug_becomes_an_internal_error_with_a_correlation_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = build_chain([Rewrite()], Upstream(ValueError("secret stack detail")))
    with caplog.at_level(logging.ERROR, "interlock.guards.rewrite"), pytest.raises(e.InternalError) as caught:
        await chain(_call())
    err = caught.value
    payload = err.payload(server="billing", tool="billing__pay", request_id="req-7f3a")
    assert "req-7f3a" in err.message
    assert err.details == {"correlation_id": "req-7f3a"}
    assert "secret stack detail" not in str(payload) and "Traceback" not in str(payload)
    assert "ValueError" not in str(payload)
    # The operator finds the traceback in the log by the same id.
    assert "req-7f3a" in caplog.text and "secret stack detail" in caplog.text
    assert caplog.records[0].exc_info is not None


async def test_an_internal_error_hint_can_be_overridden_too() -> None:
    policy = policy_of(rewrite=Hints({"internal_error": "Tell the user the gateway failed."}))
    chain = build_chain([Rewrite()], Upstream(KeyError("x")))
    with pytest.raises(e.InternalError) as caught:
        await chain(_call(policy))
    assert caught.value.hint == "Tell the user the gateway failed."


async def test_an_upstream_protocol_error_is_forwarded_as_sent() -> None:
    sent = MCPError(code=-32602, message="Unsupported protocol version", data={"supported": ["2025-11-25"]})
    chain = build_chain([Rewrite()], Upstream(sent))
    with pytest.raises(MCPError) as caught:
        await chain(_call())
    assert caught.value is sent


async def test_a_single_error_in_a_task_group_keeps_its_type() -> None:
    group = ExceptionGroup("task group", [e.UpstreamUnavailable("crm is unreachable")])
    chain = build_chain([Rewrite()], Upstream(group))
    with pytest.raises(e.UpstreamUnavailable):
        await chain(_call())


async def test_several_errors_in_a_group_are_an_internal_error() -> None:
    group = ExceptionGroup("task group", [e.UpstreamUnavailable("a"), RuntimeError("b")])
    chain = build_chain([Rewrite()], Upstream(group))
    with pytest.raises(e.InternalError):
        await chain(_call())


async def test_cancellation_is_not_swallowed() -> None:
    reached: list[str] = []

    async def hangs(call: ToolCall) -> ToolResult:
        reached.append("upstream")
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    chain = build_chain([Rewrite()], hangs)
    with anyio.fail_after(5), anyio.CancelScope() as scope:
        scope.cancel()
        await chain(_call())
        reached.append("after")  # pragma: no cover
    assert scope.cancelled_caught
    assert reached == ["upstream"]
