"""Loop detection and transient failures: a retry the error called retryable is not a loop.

The upstream was down, slow, or asked to slow down: repeating the call unchanged is the right
thing to do once it is back, so those failures never count as ``failing_retries``. What still
holds: the wait an error advised (``retry_after_s``), and the detectors that cap a runaway
(identical calls, cycles) and the budgets.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import pytest

from gateway.core import ToolCall, ToolResult, build_chain
from gateway.core.errors import (
    CallBudgetExceeded,
    CircuitOpen,
    GatewayError,
    LoopDetected,
    NotFound,
    RateLimited,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.guards.classify import Classify
from gateway.guards.outage import store_down_error

from .test_loops import Rig, Upstream

pytestmark = pytest.mark.anyio

TRANSIENT: dict[str, Callable[[], GatewayError]] = {
    "upstream_unavailable": lambda: UpstreamUnavailable("crm is not connected"),
    "upstream_timeout": lambda: UpstreamTimeout("crm did not answer in time"),
    "upstream_rate_limited": lambda: UpstreamRateLimited("crm is rate limiting (HTTP 429)"),
    "circuit_open": lambda: CircuitOpen("the circuit for crm is open"),
    "rate_limited": lambda: RateLimited("rate limit 'per-client' reached"),
    "state_unavailable": lambda: store_down_error("rate limit", OSError("down")),
}


@pytest.mark.parametrize("code", sorted(TRANSIENT))
async def test_a_transient_failure_is_no_failing_retry_and_the_retry_runs_once_it_is_back(
    code: str,
) -> None:
    rig = Rig(max_failing_retries=2)
    for _ in range(5):  # the outage lasts: each unchanged retry still reaches the upstream
        rig.upstream.raise_for["crm__get"] = TRANSIENT[code]()
        with pytest.raises(GatewayError) as caught:
            await rig.chain(rig.call("crm__get"))
        assert caught.value.retryable and not isinstance(caught.value, LoopDetected)
        rig.clock.advance(1.0)
    del rig.upstream.raise_for["crm__get"]
    result = await rig.ok(rig.call("crm__get"))  # the upstream is back: the identical retry runs
    assert result.structured == {"ok": "crm__get"}
    assert len(rig.upstream.calls) == 6 and rig.kinds == []


async def test_an_is_error_result_counts_as_what_it_is_classified() -> None:
    """Classify (below, as in the gateway) makes the upstream's words a typed error."""
    texts = {"crm__busy": "503 Service Unavailable", "crm__broken": "500 Internal Server Error"}
    rig = Rig(max_failing_retries=2)

    def answer(call: ToolCall, n: int) -> ToolResult:
        return ToolResult.of_text(texts[call.exposed_name], is_error=True)

    upstream = Upstream({"crm__busy": answer, "crm__broken": answer})
    chain = build_chain([rig.guard, Classify(rig.clock)], upstream)
    for _ in range(4):
        with pytest.raises(UpstreamUnavailable):  # transient: never a loop
            await chain(rig.call("crm__busy"))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await chain(rig.call("crm__broken"))
    with pytest.raises(LoopDetected) as caught:  # a server-side failure does fail again
        await chain(rig.call("crm__broken"))
    assert caught.value.details["kind"] == "failing_retries"
    assert len(upstream.calls) == 6


async def test_a_transient_failure_neither_counts_nor_breaks_a_run() -> None:
    rig = Rig(max_failing_retries=2, max_identical_results=3)
    for error in (NotFound("no such customer"), UpstreamTimeout("slow"), NotFound("no such customer")):
        rig.upstream.raise_for["crm__get"] = error
        with pytest.raises(GatewayError):
            await rig.chain(rig.call("crm__get"))
    err = await rig.refused(rig.call("crm__get"))
    assert isinstance(err, LoopDetected) and err.details["kind"] == "failing_retries"
    assert err.details["count"] == 2

    # Nor does a stuck poll become unstuck because one poll timed out.
    for outcome in ("ok", "timeout", "ok", "ok"):
        if outcome == "timeout":
            rig.upstream.raise_for["jobs__status"] = UpstreamTimeout("slow")
        with pytest.raises(UpstreamTimeout) if outcome == "timeout" else nullcontext():
            await rig.chain(rig.call())
        rig.upstream.raise_for.pop("jobs__status", None)
    err = await rig.refused(rig.call())
    assert err.details["kind"] == "stuck_polling" and err.details["count"] == 3


async def test_a_retry_sooner_than_the_advised_wait_gets_the_exact_remaining_wait() -> None:
    rig = Rig()

    class SlowThenLimited(Upstream):
        async def __call__(self, call: ToolCall) -> ToolResult:
            rig.clock.advance(1.0)  # the wait counts from when the error came back
            return await super().__call__(call)

    upstream = SlowThenLimited()
    chain = build_chain([rig.guard], upstream)
    upstream.raise_for["crm__get"] = UpstreamRateLimited("crm: slow down", retry_after_s=2.0)
    with pytest.raises(UpstreamRateLimited):
        await chain(rig.call("crm__get"))
    del upstream.raise_for["crm__get"]
    rig.clock.advance(0.5)
    for _ in range(5):  # too soon: refused here, not counted, and the upstream never sees it
        with pytest.raises(RateLimited) as caught:
            await chain(rig.call("crm__get"))
        err = caught.value
        assert err.retry_after_s == 1.5 and err.retryable
        assert err.details == {"reason": "retry_after", "error": "upstream_rate_limited"}
    assert "upstream_rate_limited" in err.message and "retry_after_s" in err.hint
    await chain(rig.call("crm__get", id="C2"))  # other arguments are another call: not held
    rig.clock.advance(1.5 - 1.0)  # that call took a second of the wait
    result = await chain(rig.call("crm__get"))
    assert result.structured == {"ok": "crm__get"}
    assert len(upstream.calls) == 3 and rig.kinds == []


async def test_a_runaway_retrying_through_an_outage_is_still_capped() -> None:
    down = UpstreamUnavailable("crm is not connected")
    rig = Rig(max_identical_calls=4, max_failing_retries=1)
    for _ in range(4):
        rig.upstream.raise_for["crm__get"] = down
        with pytest.raises(UpstreamUnavailable):
            await rig.chain(rig.call("crm__get"))
    err = await rig.refused(rig.call("crm__get"))
    assert isinstance(err, LoopDetected) and err.details["kind"] == "identical_calls"

    cycling = Rig(max_cycle_repeats=2, max_failing_retries=1)
    cycling.upstream.raise_for = {"crm__a": down, "crm__b": down}
    for _ in range(2):
        for tool in ("crm__a", "crm__b"):
            with pytest.raises(UpstreamUnavailable):
                await cycling.chain(cycling.call(tool))
    assert (await cycling.refused(cycling.call("crm__a"))).details["kind"] == "cycle"

    budget = Rig(max_calls_per_session=3, max_failing_retries=1)
    for n in range(3):
        budget.upstream.raise_for["crm__get"] = down
        with pytest.raises(UpstreamUnavailable):
            await budget.chain(budget.call("crm__get", id=f"C{n}"))
    assert isinstance(await budget.refused(budget.call("crm__get", id="C9")), CallBudgetExceeded)
