"""Concurrency: slots per upstream, a bounded jittered wait on the manual clock, release always."""

from __future__ import annotations

import logging
import random
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from gateway.core import ManualClock, ToolCall, ToolResult, build_chain
from gateway.core.errors import RateLimited, StateUnavailable, UpstreamError
from gateway.core.policy import ResolvedPolicy
from gateway.guards.concurrency import Concurrency, ConcurrencyLimit
from gateway.guards.ratelimit import RateLimitSettings
from gateway.guards.timeout import TimeoutSettings
from tests.calls import policy_of

from .test_ratelimit import DictStore, make_call

pytestmark = pytest.mark.anyio


class GatedUpstream:
    """A recording terminal whose calls wait for their gate (by request id) to open."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.entered: dict[str, anyio.Event] = {}
        self.gates: dict[str, anyio.Event] = {}
        self.fail: set[str] = set()

    def gate(self, request_id: str) -> anyio.Event:
        return self.gates.setdefault(request_id, anyio.Event())

    def entered_event(self, request_id: str) -> anyio.Event:
        return self.entered.setdefault(request_id, anyio.Event())

    async def __call__(self, call: ToolCall) -> ToolResult:
        self.calls.append(call.request_id)
        self.entered_event(call.request_id).set()
        await self.gate(call.request_id).wait()
        if call.request_id in self.fail:
            raise UpstreamError("boom")
        return ToolResult.of_text(call.request_id)


class Rig:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.store = DictStore(self.clock)
        self.upstream = GatedUpstream()
        self.guard = Concurrency(
            self.store,
            self.clock,
            rng=random.Random(7),
        )
        self.chain = build_chain([self.guard], self.upstream)
        self.results: dict[str, Any] = {}

    async def run(self, call: ToolCall) -> None:
        try:
            self.results[call.request_id] = await self.chain(call)
        except (RateLimited, StateUnavailable) as err:
            self.results[call.request_id] = err

    def held(self, server: str = "crm") -> set[str]:
        return self.store.slots.get(f"conc:{server}", set())


def _policy(max_in_flight: int, max_queue_wait_s: float = 5.0, **changes: Any) -> ResolvedPolicy:
    return policy_of(concurrency=ConcurrencyLimit(max_in_flight, max_queue_wait_s), **changes)


async def _until(predicate: Any) -> None:
    while not predicate():
        await anyio.lowlevel.checkpoint()


async def test_calls_within_the_limit_run_together_and_give_their_slots_back() -> None:
    rig = Rig()
    policy = _policy(2)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for rid in ("a", "b"):
                tg.start_soon(rig.run, make_call(policy, request_id=rid))
            await rig.upstream.entered_event("a").wait()
            await rig.upstream.entered_event("b").wait()
            assert rig.held() == {"a", "b"}
            rig.upstream.gate("a").set()
            rig.upstream.gate("b").set()
    assert rig.held() == set() and rig.clock.slept == []


async def test_a_call_waits_for_a_slot_with_small_jittered_backoff() -> None:
    rig = Rig()
    policy = _policy(1, max_queue_wait_s=5.0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.run, make_call(policy, request_id="a"))
            await rig.upstream.entered_event("a").wait()
            tg.start_soon(rig.run, make_call(policy, request_id="b"))
            await _until(lambda: len(rig.clock.slept) >= 4)
            assert rig.upstream.calls == ["a"], "b waits; it has not reached the upstream"
            rig.upstream.gate("a").set()
            await rig.upstream.entered_event("b").wait()
            rig.upstream.gate("b").set()
    assert rig.upstream.calls == ["a", "b"]
    assert isinstance(rig.results["b"], ToolResult)
    delays = rig.clock.slept
    assert all(0 < d <= 0.25 for d in delays)
    assert delays[0] <= 0.01 and delays[1] <= 0.02, "backoff starts small and grows"
    assert len(set(delays)) == len(delays), "jittered"
    assert rig.held() == set()


async def test_no_slot_within_the_queue_wait_is_rate_limited() -> None:
    rig = Rig()
    policy = _policy(1, max_queue_wait_s=0.5)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.run, make_call(policy, request_id="a"))
            await rig.upstream.entered_event("a").wait()
            await rig.run(make_call(policy, request_id="b"))
            err = rig.results["b"]
            assert isinstance(err, RateLimited)
            assert err.details == {
                "reason": "too_many_in_flight",
                "max_in_flight": 1,
                "max_queue_wait_s": 0.5,
            }
            assert err.retry_after_s == 1.0
            assert sum(rig.clock.slept) == pytest.approx(0.5), "waited the whole queue wait, not longer"
            assert rig.upstream.calls == ["a"], "the refused call never reached the upstream"
            assert rig.held() == {"a"}, "a refused call releases nothing it did not hold"
            rig.upstream.gate("a").set()
    assert rig.held() == set()


async def test_a_zero_queue_wait_refuses_at_once() -> None:
    rig = Rig()
    rig.store.slots["conc:crm"] = {"someone-else"}
    await rig.run(make_call(_policy(1, max_queue_wait_s=0.0), request_id="b"))
    assert isinstance(rig.results["b"], RateLimited)
    assert rig.clock.slept == [] and rig.store.round_trips["acquire"] == 1


async def test_servers_have_separate_slots() -> None:
    rig = Rig()
    rig.store.slots["conc:crm"] = {"someone-else"}
    rig.upstream.gate("b").set()
    await rig.run(make_call(_policy(1, max_queue_wait_s=0.0), server="erp", request_id="b"))
    assert isinstance(rig.results["b"], ToolResult)


async def test_the_slot_is_released_on_failure_and_on_cancellation() -> None:
    rig = Rig()
    policy = _policy(1)
    rig.upstream.fail.add("a")
    rig.upstream.gate("a").set()
    with pytest.raises(UpstreamError):
        await rig.chain(make_call(policy, request_id="a"))
    assert rig.held() == set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.run, make_call(policy, request_id="c"))
            await rig.upstream.entered_event("c").wait()
            assert rig.held() == {"c"}
            tg.cancel_scope.cancel()
    assert rig.held() == set(), "released although the call was cancelled"
    assert rig.store.round_trips["release"] == 2


async def test_cancelled_while_waiting_releases_what_the_store_may_have_granted() -> None:
    rig = Rig()
    rig.store.slots["conc:crm"] = {"someone-else"}
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.run, make_call(_policy(1), request_id="b"))
            await _until(lambda: len(rig.clock.slept) >= 2)
            tg.cancel_scope.cancel()
    assert rig.store.round_trips["release"] == 1
    assert rig.held() == {"someone-else"}


async def test_store_down_open_passes_and_closed_refuses(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.store.down = True
    rig.upstream.gate("a").set()
    with caplog.at_level(logging.WARNING):
        await rig.run(
            make_call(_policy(1, rate_limits=RateLimitSettings(on_store_error="open")), request_id="a")
        )
    assert isinstance(rig.results["a"], ToolResult)
    assert rig.store.round_trips["release"] == 0, "nothing was held"
    assert any("fail-open" in r.getMessage() for r in caplog.records)

    await rig.run(
        make_call(_policy(1, rate_limits=RateLimitSettings(on_store_error="closed")), request_id="b")
    )
    err = rig.results["b"]
    assert isinstance(err, StateUnavailable) and err.details["max_in_flight"] == 1
    assert rig.upstream.calls == ["a"]


async def test_no_limit_costs_no_round_trip() -> None:
    rig = Rig()
    rig.upstream.gate("a").set()
    await rig.run(make_call(ResolvedPolicy(), request_id="a"))
    assert sum(rig.store.round_trips.values()) == 0


def test_the_lease_outlives_the_call() -> None:
    rig = Rig()
    assert rig.guard._lease_s(make_call(_policy(1))) == 300.0
    assert rig.guard._lease_s(make_call(_policy(1, timeout=TimeoutSettings(600.0)))) == 1200.0
