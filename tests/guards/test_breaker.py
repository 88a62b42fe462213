"""The circuit breaker guard: real chains, a manual clock, and a small dict-backed state store."""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from gateway.core import Caller, ManualClock, ToolCall, ToolResult, build_chain
from gateway.core import errors as e
from gateway.guards import breaker_state as machine
from gateway.guards.breaker import STATE_GAUGE, CircuitBreaker, classify, permit_lease_s
from gateway.guards.breaker_state import BreakerSettings, Outcome
from gateway.guards.classify import Classify
from gateway.guards.retry import MemoryRetryBudget, Retry, RetrySettings
from gateway.guards.timeout import Timeout, TimeoutSettings
from gateway.guards.traits import Traits
from gateway.state.base import GcraDecision, StoreUnavailable, Updater
from tests.calls import policy_of

pytestmark = pytest.mark.anyio

OK = ToolResult.of_text("ok")
BREAK_S = 10.0
TRIP = BreakerSettings(window_size=4, minimum_calls=4, failure_rate=0.5, break_s=BREAK_S, half_open_calls=3)


class DictStore:
    """The state layer's ``update``/``get`` over a dict: scaffolding, not a stand-in for the guard.

    Like a contended store, it runs each updater twice on the same input and keeps the second answer:
    an updater that mutates its input or draws anything of its own would show up as a wrong result.
    Documents go through JSON, as they do on every real store.
    """

    name = "dict"

    def __init__(self) -> None:
        self.docs: dict[str, str] = {}
        self.down = False
        self.updates = 0

    async def update(self, key: str, updater: Updater, *, ttl_s: float) -> Any:
        assert ttl_s >= 86_400
        await anyio.lowlevel.checkpoint()
        if self.down:
            raise StoreUnavailable("connection refused (test)")
        self.updates += 1
        current = json.loads(self.docs[key]) if key in self.docs else None
        snapshot = json.dumps(current)
        first, _ = updater(current)
        assert json.dumps(current) == snapshot, "an updater mutated its input"
        new, result = updater(current)
        assert json.dumps(first) == json.dumps(new), "an updater is not pure"
        if new is None:
            self.docs.pop(key, None)
        else:
            self.docs[key] = json.dumps(new)
        return result

    async def get(self, key: str) -> dict[str, Any] | None:
        return json.loads(self.docs[key]) if key in self.docs else None

    async def gcra(
        self, key: str, *, period_s: float, limit: int, burst: int, now: float, cost: int = 1
    ) -> GcraDecision:
        raise NotImplementedError

    async def acquire(self, key: str, *, limit: int, lease_s: float, holder: str) -> bool:
        raise NotImplementedError

    async def release(self, key: str, *, holder: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class RecordingRandom(random.Random):
    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.drawn: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        value = super().uniform(a, b)
        self.drawn.append(value)
        return value


Outcome_ = ToolResult | e.GatewayError


class Upstream:
    """A scripted terminal. ``script`` maps a call to an outcome; it may also take time on the clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[ToolCall] = []
        self.next: list[Outcome_] = []
        self.default: Outcome_ = OK
        self.takes_s = 0.0
        self.gate: anyio.Event | None = None

    async def __call__(self, call: ToolCall) -> ToolResult:
        self.calls.append(call)
        if self.gate is not None:
            await self.gate.wait()
        self.clock.advance(self.takes_s)
        outcome = self.next.pop(0) if self.next else self.default
        if isinstance(outcome, e.GatewayError):
            raise outcome
        return outcome


def _call(settings: BreakerSettings = TRIP, *, tool: str = "get_customer", **policy: Any) -> ToolCall:
    return ToolCall(
        server="crm",
        tool=tool,
        exposed_name=f"crm__{tool}",
        arguments={"customer_id": "C1"},
        caller=Caller(principal="agent", session_key="s1"),
        request_id="r1",
        policy=policy_of(breaker=settings, **policy),
    )


class Rig:
    def __init__(self, **kwargs: Any) -> None:
        self.clock = ManualClock()
        self.store = DictStore()
        self.rng = RecordingRandom(1234)
        self.states: list[tuple[str, str, str]] = []
        self.upstream = Upstream(self.clock)
        self.breaker = CircuitBreaker(
            self.store,
            self.clock,
            rng=self.rng,
            on_state=lambda server, tool, state: self.states.append((server, tool, state)),
            **kwargs,
        )
        self.chain = build_chain([self.breaker], self.upstream)

    async def fails(self, call: ToolCall) -> e.GatewayError:
        with pytest.raises(e.GatewayError) as caught:
            await self.chain(call)
        return caught.value

    async def trip(self, call: ToolCall | None = None) -> e.GatewayError:
        """Four upstream failures in a row; returns what the tripping call raised."""
        call = call or _call()
        self.upstream.next = [e.UpstreamError("500")] * 4
        for _ in range(3):
            await self.fails(call)
        return await self.fails(call)

    async def doc(self, key: str = "breaker:crm") -> dict[str, Any]:
        found = await self.store.get(key)
        assert found is not None
        return found


async def test_failures_open_the_circuit_and_the_tripping_call_gets_its_real_error() -> None:
    rig = Rig()
    tripping = await rig.trip()
    assert isinstance(tripping, e.UpstreamError) and tripping.code == "upstream_error"
    assert (await rig.doc())["state"] == "open"
    assert rig.states == [("crm", "", "closed"), ("crm", "", "open")]


async def test_open_fails_fast_with_the_exact_remaining_break_and_never_reaches_the_upstream() -> None:
    rig = Rig()
    await rig.trip()
    reached = len(rig.upstream.calls)
    jittered = BREAK_S * rig.rng.drawn[-1]  # the draw made by the call that tripped it
    err = await rig.fails(_call())
    assert isinstance(err, e.CircuitOpen) and err.retryable
    assert err.retry_after_s == round(jittered, 3)
    assert err.details == {"state": "open", "breaker": "breaker:crm"}
    rig.clock.advance(3.0)
    assert (await rig.fails(_call())).retry_after_s == round(jittered - 3.0, 3)
    assert len(rig.upstream.calls) == reached


async def test_minimum_calls_is_respected() -> None:
    rig = Rig()
    rig.upstream.next = [e.UpstreamUnavailable("down")] * 3
    for _ in range(3):
        assert (await rig.fails(_call())).code == "upstream_unavailable"
    assert await rig.doc() == {"state": "closed", "gen": 0, "window": "fff"}  # 100 %, but 3 < 4 calls
    assert await rig.chain(_call()) is OK  # so the fourth call is let through
    assert (await rig.doc())["state"] == "open"  # and its outcome completes the minimum: 3 of 4


async def test_the_slow_call_rate_opens_it_even_when_every_call_succeeds() -> None:
    settings = BreakerSettings(window_size=4, minimum_calls=4, slow_call_rate=0.5, slow_call_s=2.0)
    rig = Rig()
    rig.upstream.takes_s = 2.5
    for _ in range(4):
        assert await rig.chain(_call(settings)) is OK
    assert (await rig.fails(_call(settings))).code == "circuit_open"


async def test_calls_at_the_slow_threshold_are_not_slow() -> None:
    settings = BreakerSettings(window_size=4, minimum_calls=4, slow_call_rate=0.5, slow_call_s=2.0)
    rig = Rig()
    rig.upstream.takes_s = 2.0
    for _ in range(5):
        assert await rig.chain(_call(settings)) is OK


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (e.UpstreamUnavailable("x"), Outcome.FAILURE),
        (e.UpstreamTimeout("x"), Outcome.FAILURE),
        (e.UpstreamError("x"), Outcome.FAILURE),
        (e.OutcomeUnknown("x"), Outcome.FAILURE),
        (e.InvalidArguments("x"), Outcome.IGNORED),
        (e.Unauthorized("x"), Outcome.IGNORED),
        (e.UpstreamRateLimited("x"), Outcome.IGNORED),
        (e.RateLimited("x"), Outcome.IGNORED),
        (e.Forbidden("x"), Outcome.IGNORED),
        (e.NotFound("x"), Outcome.IGNORED),
        (e.CircuitOpen("x"), Outcome.IGNORED),
        (ValueError("a gateway bug"), Outcome.IGNORED),
        (ToolResult.of_text("the tool's own complaint", is_error=True), Outcome.IGNORED),
        (OK, Outcome.SUCCESS),
    ],
    ids=lambda o: getattr(o, "code", None) or type(o).__name__,
)
def test_outcome_classes(outcome: ToolResult | BaseException, expected: Outcome) -> None:
    assert classify(outcome) is expected


async def test_ignored_outcomes_neither_count_nor_reset_the_window() -> None:
    rig = Rig()
    ignored: list[Outcome_] = [
        ToolResult.of_text("no such customer", is_error=True),
        e.InvalidArguments("bad id"),
        e.Unauthorized("401"),
        e.UpstreamRateLimited("429"),
        e.RateLimited("ours"),
    ]
    rig.upstream.next = [e.UpstreamError("500"), *ignored, OK, e.UpstreamError("500"), *ignored]
    for _ in range(1 + len(ignored)):
        await _settle(rig.chain(_call()))
    window = (await rig.doc())["window"]
    assert window == "f"
    for _ in range(2 + len(ignored)):
        await _settle(rig.chain(_call()))
    assert (await rig.doc())["window"] == "fsf"
    rig.upstream.next = [OK]
    await rig.chain(_call())  # the fourth counted outcome: 2 failures of 4
    assert (await rig.doc())["state"] == "open"


async def test_half_open_lets_exactly_n_concurrent_trials_through() -> None:
    rig = Rig()
    await rig.trip()
    rig.clock.advance(BREAK_S * 1.1)
    rig.upstream.gate = anyio.Event()
    rig.upstream.calls.clear()
    rig.upstream.default = OK
    results: list[ToolResult] = []
    refused: list[e.GatewayError] = []

    async def one() -> None:
        try:
            results.append(await rig.chain(_call()))
        except e.CircuitOpen as exc:
            refused.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(TRIP.half_open_calls + 5):
                tg.start_soon(one)
            while len(refused) < 5:  # the refusals need no upstream: they finish on their own
                await anyio.lowlevel.checkpoint()
            assert len(rig.upstream.calls) == TRIP.half_open_calls
            assert all(exc.details["state"] == "half_open" for exc in refused)
            rig.upstream.gate.set()
    assert len(results) == TRIP.half_open_calls and len(rig.upstream.calls) == TRIP.half_open_calls
    assert (await rig.doc())["state"] == "closed"
    assert [s for _, _, s in rig.states] == ["closed", "open", "half_open", "closed"]


async def test_all_trials_succeeding_closes_and_resets_the_break() -> None:
    rig = Rig()
    settings = BreakerSettings(**{**_fields(TRIP), "half_open_calls": 1})
    await rig.trip(_call(settings))
    rig.clock.advance(BREAK_S * 1.1)
    rig.upstream.next = [e.UpstreamError("500")]
    await rig.fails(_call(settings))  # the trial fails: the break grows to 20 s
    assert (await rig.doc())["break_s"] == 2 * BREAK_S
    rig.clock.advance(2 * BREAK_S * 1.1)
    assert await rig.chain(_call(settings)) is OK
    assert await rig.doc() == {"state": "closed", "gen": 5, "window": ""}
    await rig.trip(_call(settings))
    assert (await rig.doc())["break_s"] == BREAK_S  # back to the first break


async def test_failed_trials_reopen_with_growing_capped_jittered_breaks() -> None:
    settings = BreakerSettings(
        **{**_fields(TRIP), "half_open_calls": 1, "break_multiplier": 3.0, "max_break_s": 50.0}
    )
    rig = Rig()
    await rig.trip(_call(settings))
    rig.upstream.default = e.UpstreamUnavailable("still down")
    breaks: list[float] = []
    for base in (BREAK_S, 30.0, 50.0, 50.0):
        err = await rig.fails(_call(settings))
        assert isinstance(err, e.CircuitOpen)
        assert err.retry_after_s is not None
        assert err.retry_after_s == round(min(50.0, base * rig.rng.drawn[-1]), 3)
        assert 0.9 * base <= err.retry_after_s <= min(50.0, 1.1 * base)
        breaks.append(err.retry_after_s)
        rig.clock.advance(err.retry_after_s)
        assert (await rig.fails(_call(settings))).code == "upstream_unavailable"  # the trial
    assert breaks[0] < breaks[1] < breaks[2]
    assert [s for _, _, s in rig.states][-2:] == ["half_open", "open"]


async def test_an_abandoned_permit_lapses_and_is_reissued() -> None:
    settings = BreakerSettings(**{**_fields(TRIP), "half_open_calls": 1, "slow_call_s": 2.0})
    rig = Rig()
    await rig.trip(_call(settings))
    rig.clock.advance(BREAK_S * 1.1)
    lease = permit_lease_s(_call(settings).policy)
    assert lease == 4.0

    def another_replica_takes_the_permit_and_dies(doc: dict[str, Any] | None) -> tuple[Any, Any]:
        return machine.before(doc, settings, now=rig.clock.wall(), permit_id="dead", lease_s=lease)

    await rig.store.update("breaker:crm", another_replica_takes_the_permit_and_dies, ttl_s=86_400)
    refused = await rig.fails(_call(settings))
    assert refused.code == "circuit_open" and refused.details["state"] == "half_open"
    assert refused.retry_after_s == pytest.approx(2.0)  # bounded by slow_call_s
    rig.clock.advance(lease)
    assert await rig.chain(_call(settings)) is OK
    assert (await rig.doc())["state"] == "closed"


async def test_the_permit_lease_covers_the_calls_timeout() -> None:
    assert permit_lease_s(_call(timeout=TimeoutSettings(60.0)).policy) == 60.0


async def test_a_cancelled_trial_gives_its_permit_back() -> None:
    settings = BreakerSettings(**{**_fields(TRIP), "half_open_calls": 1})
    rig = Rig()
    await rig.trip(_call(settings))
    rig.clock.advance(BREAK_S * 1.1)
    rig.upstream.gate = anyio.Event()
    rig.upstream.calls.clear()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.chain, _call(settings))
            while not rig.upstream.calls:  # the trial holds the permit and waits upstream
                await anyio.lowlevel.checkpoint()
            assert (await rig.fails(_call(settings))).details["state"] == "half_open"
            tg.cancel_scope.cancel()
    assert (await rig.doc())["permits"] == {}
    rig.upstream.gate = None
    assert await rig.chain(_call(settings)) is OK  # no clock moved: the permit came straight back
    assert (await rig.doc())["state"] == "closed"


async def test_a_store_failure_fails_open_unprotected_and_logs_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    rig.store.down = True
    with caplog.at_level(logging.WARNING, logger="interlock.guards.breaker"):
        for _ in range(3):
            assert await rig.chain(_call()) is OK
        rig.clock.advance(61)
        assert await rig.chain(_call()) is OK
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 2
    assert len(rig.upstream.calls) == 4


async def test_a_store_failure_fails_closed_when_the_policy_says_so() -> None:
    rig = Rig()
    rig.store.down = True
    err = await rig.fails(_call(BreakerSettings(on_store_error="closed")))
    assert isinstance(err, e.StateUnavailable) and err.retryable
    assert err.details["breaker"] == "breaker:crm"
    assert rig.upstream.calls == []


async def test_a_store_failing_after_the_call_leaves_its_result_alone() -> None:
    rig = Rig()

    async def store_dies_mid_call(call: ToolCall) -> ToolResult:
        rig.store.down = True
        raise e.UpstreamTimeout("slow")

    chain = build_chain([rig.breaker], store_dies_mid_call)
    with pytest.raises(e.UpstreamTimeout):
        await chain(_call())


def _cached_settings() -> BreakerSettings:
    return BreakerSettings(**{**_fields(TRIP), "fallback": "cached"})


async def test_the_cached_fallback_serves_the_last_good_result_marked_as_such() -> None:
    rig = Rig()
    settings = _cached_settings()
    good = ToolResult({"content": [{"type": "text", "text": "C1: Ada"}], "_meta": {"x": 1}})
    rig.upstream.next = [good]
    read_only = _call(settings, traits=Traits(idempotent=True))
    assert await rig.chain(read_only) is good
    other = read_only.with_changes(arguments={"customer_id": "C2"})
    await rig.trip(other)
    rig.clock.advance(4.2)
    served = await rig.chain(read_only.with_changes(arguments={"customer_id": "C1"}))
    assert served.notes == ("fallback_cached",)
    assert served.raw["_meta"] == {"x": 1, "interlock/fallback": {"kind": "cached", "age_s": 4}}
    assert served.content[0] == {"type": "text", "text": "C1: Ada"}
    assert served.content[-1]["text"] == "Served from cache 4 s old: the service is unavailable."
    assert good.raw["_meta"] == {"x": 1}  # the cached result itself is untouched
    assert (await rig.fails(other)).code == "circuit_open"  # nothing good was ever seen for C2


async def test_the_cached_fallback_is_only_for_read_only_tools() -> None:
    rig = Rig()
    settings = _cached_settings()
    trusted = _call(settings, traits=Traits(trust_annotations=True)).with_changes(
        annotations={"readOnlyHint": True}
    )
    untrusted = _call(settings).with_changes(annotations={"readOnlyHint": True})
    assert await rig.chain(trusted) is OK
    assert await rig.chain(untrusted) is OK
    await rig.trip(_call(settings, traits=Traits(idempotent=False)))
    assert (await rig.chain(trusted)).notes == ("fallback_cached",)
    assert (await rig.fails(untrusted)).code == "circuit_open"


async def test_the_cache_is_bounded() -> None:
    rig = Rig(cache_entries=2)
    settings = _cached_settings()
    for cid in ("C1", "C2", "C3"):
        await rig.chain(
            _call(settings, traits=Traits(idempotent=True)).with_changes(arguments={"customer_id": cid})
        )
    assert len(rig.breaker._cache) == 2


async def test_the_tool_fallback_calls_the_other_tool_with_the_same_arguments() -> None:
    seen: list[tuple[str, Mapping[str, Any], Caller]] = []

    async def runner(exposed_name: str, arguments: Mapping[str, Any], caller: Caller) -> ToolResult:
        seen.append((exposed_name, arguments, caller))
        return ToolResult.of_text("from the replica")

    rig = Rig(fallback_runner=runner)
    settings = BreakerSettings(
        **{**_fields(TRIP), "fallback": "tool", "fallback_tool": "mirror__get_customer"}
    )
    await rig.trip(_call(settings))
    result = await rig.chain(_call(settings))
    assert result.text() == "from the replica"
    assert result.notes == ("fallback_tool",)
    assert result.raw["_meta"]["interlock/fallback"] == {"kind": "tool", "tool": "mirror__get_customer"}
    call = _call(settings)
    assert seen == [("mirror__get_customer", call.arguments, call.caller)]


async def test_a_failing_fallback_tool_still_answers_circuit_open() -> None:
    async def runner(exposed_name: str, arguments: Mapping[str, Any], caller: Caller) -> ToolResult:
        raise e.UpstreamUnavailable("the mirror is down too")

    rig = Rig(fallback_runner=runner)
    settings = BreakerSettings(
        **{**_fields(TRIP), "fallback": "tool", "fallback_tool": "mirror__get_customer"}
    )
    await rig.trip(_call(settings))
    err = await rig.fails(_call(settings))
    assert isinstance(err, e.CircuitOpen)
    assert err.details["fallback_error"] == "upstream_unavailable"


async def test_per_tool_breakers_are_separate_and_labelled() -> None:
    rig = Rig()
    settings = BreakerSettings(**{**_fields(TRIP), "per_tool": True})
    await rig.trip(_call(settings, tool="flaky"))
    assert (await rig.fails(_call(settings, tool="flaky"))).code == "circuit_open"
    assert await rig.chain(_call(settings, tool="healthy")) is OK
    assert (await rig.doc("breaker:crm:flaky"))["state"] == "open"
    assert ("crm", "flaky", "open") in rig.states and ("crm", "healthy", "closed") in rig.states


async def test_a_disabled_breaker_touches_nothing() -> None:
    rig = Rig()
    rig.upstream.default = e.UpstreamError("500")
    for _ in range(10):
        await rig.fails(_call(BreakerSettings(enabled=False, window_size=1, minimum_calls=1)))
    assert rig.store.updates == 0


def test_the_gauge_values() -> None:
    assert STATE_GAUGE == {"closed": 0, "half_open": 1, "open": 2}


async def test_between_retry_and_timeout_each_attempt_counts_and_an_open_circuit_stops_retries() -> None:
    clock = ManualClock()
    store = DictStore()
    upstream = Upstream(clock)
    upstream.default = ToolResult.of_text("503 Service Unavailable", is_error=True)
    chain = build_chain(
        [
            Retry(clock, MemoryRetryBudget(clock), rng=random.Random(1)),
            CircuitBreaker(store, clock, rng=random.Random(2)),
            Timeout(clock),
            Classify(clock),
        ],
        upstream,
    )
    settings = BreakerSettings(window_size=3, minimum_calls=3, failure_rate=1.0)
    policy = {
        "traits": Traits(idempotent=True),
        "retry": RetrySettings(max_attempts=5),
        "timeout": TimeoutSettings(5.0),
    }
    with pytest.raises(e.CircuitOpen):
        await chain(_call(settings, **policy))
    assert [c.attempt for c in upstream.calls] == [1, 2, 3]  # the third attempt tripped it
    with pytest.raises(e.CircuitOpen):
        await chain(_call(settings, **policy))
    assert len(upstream.calls) == 3


async def _settle(awaitable: Any) -> None:
    with contextlib.suppress(e.GatewayError):
        await awaitable


def _fields(settings: BreakerSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}
