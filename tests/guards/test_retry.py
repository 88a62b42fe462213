"""Retry repeats only idempotent calls, only on passing upstream failures, within time and a budget."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.core import ManualClock, ToolCall, ToolResult, build_chain
from gateway.core import errors as e
from gateway.core.policy import ResolvedPolicy
from gateway.guards.classify import Classify
from gateway.guards.retry import MemoryRetryBudget, Retry, RetrySettings
from gateway.guards.rewrite import Rewrite
from gateway.guards.timeout import Timeout, TimeoutSettings
from gateway.guards.traits import Traits
from tests.calls import policy_of, tool_call

pytestmark = pytest.mark.anyio

OK = ToolResult.of_text("ok")


def _error(text: str) -> ToolResult:
    return ToolResult.of_text(text, is_error=True)


def _policy(**changes: Any) -> ResolvedPolicy:
    return policy_of(**{"traits": Traits(idempotent=True), **changes})


def _call(policy: ResolvedPolicy, **changes: Any) -> ToolCall:
    return tool_call(policy=policy, **changes)


class Upstream:
    """A scripted terminal: answers in order (the last answer repeats) and records each attempt."""

    def __init__(self, *outcomes: ToolResult | e.GatewayError) -> None:
        self.outcomes = outcomes
        self.calls: list[ToolCall] = []

    async def __call__(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        if isinstance(outcome, e.GatewayError):
            raise outcome
        return outcome

    @property
    def attempts(self) -> list[int]:
        return [c.attempt for c in self.calls]


class Rig:
    """Retry over classify over a scripted upstream, all on one manual clock."""

    def __init__(self, *outcomes: ToolResult | e.GatewayError) -> None:
        self.clock = ManualClock()
        self.upstream = Upstream(*outcomes)
        self.retry = Retry(self.clock, MemoryRetryBudget(self.clock), rng=random.Random(1234))
        self.chain = build_chain([self.retry, Classify(self.clock)], self.upstream)

    async def fails(self, call: ToolCall) -> e.GatewayError:
        with pytest.raises(e.GatewayError) as caught:
            await self.chain(call)
        return caught.value


async def test_an_idempotent_429_waits_exactly_retry_after_and_succeeds() -> None:
    rig = Rig(_error("429 Too Many Requests. Retry-After: 2"), OK)
    result = await rig.chain(_call(_policy()))
    assert result is OK
    assert rig.clock.slept == [2.0]  # the jitter ceiling (0.2 s) is below the upstream's wait
    assert rig.upstream.attempts == [1, 2]


async def test_a_non_idempotent_429_is_not_retried_and_keeps_retry_after() -> None:
    rig = Rig(_error("429 Too Many Requests. Retry-After: 2"), OK)
    err = await rig.fails(_call(_policy(traits=Traits(idempotent=False))))
    assert err.code == "upstream_rate_limited" and err.retry_after_s == 2.0
    assert rig.upstream.attempts == [1]
    assert rig.clock.slept == []


async def test_annotations_count_only_where_policy_trusts_them() -> None:
    annotations = {"readOnlyHint": True}
    rig = Rig(_error("503 Service Unavailable"), OK)
    await rig.fails(_call(ResolvedPolicy(), annotations=annotations))
    assert rig.upstream.attempts == [1]

    rig = Rig(_error("503 Service Unavailable"), OK)
    result = await rig.chain(_call(policy_of(traits=Traits(trust_annotations=True)), annotations=annotations))
    assert result is OK and rig.upstream.attempts == [1, 2]


async def test_retry_after_above_the_cap_is_the_agents_to_wait() -> None:
    rig = Rig(_error("429 Too Many Requests. Retry-After: 60"), OK)
    err = await rig.fails(_call(_policy(retry=RetrySettings(max_retry_after_s=30))))
    assert err.retry_after_s == 60.0
    assert err.details["retry_skipped"] == "retry_after_above_cap"
    assert rig.clock.slept == [] and rig.upstream.attempts == [1]


async def test_full_jitter_delays_stay_within_the_exponential_ceiling() -> None:
    settings = RetrySettings(max_attempts=5, base_delay_s=1.0, max_delay_s=3.0)
    rig = Rig(_error("503 Service Unavailable"))
    err = await rig.fails(_call(_policy(retry=settings)))
    ceilings = [1.0, 2.0, 3.0, 3.0]  # base * 2**(n-1), capped at max_delay_s
    seeded = random.Random(1234)
    expected = [seeded.uniform(0, c) for c in ceilings]
    assert rig.clock.slept == expected
    assert all(0 <= d <= c for d, c in zip(rig.clock.slept, ceilings, strict=True))
    assert rig.upstream.attempts == [1, 2, 3, 4, 5]
    assert err.code == "upstream_unavailable" and err.details["attempts"] == 5


async def test_jitter_is_spread_not_fixed() -> None:
    retry = Retry(ManualClock(), MemoryRetryBudget(ManualClock()), rng=random.Random(5))
    delays = {retry.backoff(3, RetrySettings(base_delay_s=1.0, max_delay_s=10.0)) for _ in range(50)}
    assert len(delays) == 50 and all(0 <= d <= 4.0 for d in delays)
    assert min(delays) < 1.0 < 3.0 < max(delays)


@pytest.mark.parametrize(
    "outcome",
    [
        e.RateLimited("the gateway's own limit", retry_after_s=1.0),
        e.OutcomeUnknown("may have run"),
        e.UpstreamError("500"),
        e.Unauthorized("401"),
        e.InvalidArguments("400"),
        _error("the tool's own complaint"),
    ],
    ids=lambda o: getattr(o, "code", "unclassified"),
)
async def test_only_passing_upstream_failures_are_retried(outcome: ToolResult | e.GatewayError) -> None:
    rig = Rig(outcome, OK)
    if isinstance(outcome, ToolResult):
        assert await rig.chain(_call(_policy())) is outcome
    else:
        assert (await rig.fails(_call(_policy()))) is outcome
    assert rig.upstream.attempts == [1] and rig.clock.slept == []


async def test_each_retryable_upstream_failure_is_retried() -> None:
    for failure in (e.UpstreamRateLimited("429"), e.UpstreamUnavailable("down"), e.UpstreamTimeout("slow")):
        rig = Rig(failure, OK)
        assert await rig.chain(_call(_policy())) is OK
        assert rig.upstream.attempts == [1, 2]


async def test_no_retry_when_the_wait_would_pass_the_deadline() -> None:
    rig = Rig(_error("429 Too Many Requests. Retry-After: 2"), OK)
    call = _call(_policy(), deadline=rig.clock.monotonic() + 1.5)
    err = await rig.fails(call)
    assert err.details["retry_skipped"] == "deadline"
    assert rig.upstream.attempts == [1] and rig.clock.slept == []


async def test_an_empty_budget_returns_the_error_at_once() -> None:
    rig = Rig(_error("503 Service Unavailable"), OK, _error("503 Service Unavailable"), OK)
    rig.retry.budget = MemoryRetryBudget(rig.clock, cap=1.0, floor_per_s=0.0)
    policy = _policy(retry=RetrySettings(budget_ratio=0.2))
    assert await rig.chain(_call(policy)) is OK  # spends the one token in hand
    err = await rig.fails(_call(policy))
    assert err.details["retry_budget_exhausted"] is True
    assert rig.upstream.attempts == [1, 2, 1]


def test_the_budget_earns_a_fraction_per_call_and_a_floor_per_second() -> None:
    clock = ManualClock()
    budget = MemoryRetryBudget(clock, cap=10.0, floor_per_s=1.0)
    while budget.try_spend("crm"):
        pass  # drain the full bucket a quiet server starts with
    assert not budget.try_spend("crm")
    for _ in range(4):
        budget.deposit("crm", 0.25)
    assert budget.try_spend("crm") and not budget.try_spend("crm")
    clock.advance(1.0)  # the floor: a quiet server can still retry
    assert budget.try_spend("crm") and not budget.try_spend("crm")
    clock.advance(3_600)
    assert budget.tokens("crm") == 10.0  # capped
    assert budget.tokens("other") == 10.0  # per server


async def test_retry_sits_above_timeout_and_each_attempt_gets_its_own_deadline() -> None:
    clock = ManualClock()
    upstream = Upstream(e.UpstreamTimeout("crm did not answer in time"), OK)
    chain = build_chain(
        [Rewrite(), Retry(clock, MemoryRetryBudget(clock), rng=random.Random(1)), Timeout(clock)],
        upstream,
    )
    policy = _policy(timeout=TimeoutSettings(5.0), retry=RetrySettings(base_delay_s=0.5))
    assert await chain(_call(policy)) is OK
    first, second = upstream.calls
    assert first.deadline == pytest.approx(1_000.0 + 5.0)
    assert second.deadline == pytest.approx(1_000.0 + clock.slept[0] + 5.0)
    assert [c.attempt for c in upstream.calls] == [1, 2]


async def test_a_non_idempotent_timeout_becomes_outcome_unknown_and_is_never_retried() -> None:
    clock = ManualClock()
    upstream = Upstream(e.UpstreamTimeout("crm did not answer in time"), OK)
    chain = build_chain(
        [Rewrite(), Retry(clock, MemoryRetryBudget(clock)), Timeout(clock), Classify(clock)], upstream
    )
    with pytest.raises(e.OutcomeUnknown) as caught:
        await chain(_call(_policy(traits=Traits(idempotent=False), timeout=TimeoutSettings(5.0))))
    assert not caught.value.retryable
    assert upstream.attempts == [1]
