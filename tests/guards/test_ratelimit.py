"""Rate limits: GCRA bursts and exact waits, several limits, key isolation, a store that is down.

``DictStore`` is test scaffolding for the state layer (the real stores live in ``gateway.state``):
a dict-backed ``StateStore`` with the standard GCRA, TTLs on the manual clock, slots with holders,
a switch that makes every operation raise ``StoreUnavailable``, and a count of round trips.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import pytest

from gateway.core import ManualClock, ToolCall, build_chain
from gateway.core.errors import GatewayError, RateLimited, StateUnavailable
from gateway.core.policy import ResolvedPolicy
from gateway.guards.ratelimit import (
    RateLimit,
    RateLimits,
    RateLimitSettings,
    ceil_ms,
    format_period,
    limit_key,
)
from gateway.state.base import GcraDecision, StoreUnavailable, Updater
from tests.calls import Recorder, policy_of, tool_call

pytestmark = pytest.mark.anyio


class DictStore:
    """A ``StateStore`` in a dict. ``rerun_updates`` runs every updater twice (the first answer
    discarded), as a store under contention may: a guard whose updater has side effects shows it."""

    name = "dict"

    def __init__(self, clock: ManualClock, *, rerun_updates: bool = True) -> None:
        self.clock = clock
        self.rerun_updates = rerun_updates
        self.docs: dict[str, tuple[str, float]] = {}
        self.tats: dict[str, int] = {}
        self.slots: dict[str, set[str]] = {}
        self.down = False
        self.round_trips: Counter[str] = Counter()

    def _trip(self, op: str) -> None:
        self.round_trips[op] += 1
        if self.down:
            raise StoreUnavailable("connection refused (test)")

    async def gcra(
        self, key: str, *, period_s: float, limit: int, burst: int, now: float, cost: int = 1
    ) -> GcraDecision:
        """The standard GCRA: one theoretical arrival time per key, in integer microseconds (floats
        at wall-clock magnitudes carry ~1e-7 s of noise, enough to refuse an exact wait)."""
        self._trip("gcra")
        now_us = round(now * 1_000_000)
        interval = round(period_s * 1_000_000 / limit)
        tat = max(self.tats.get(key, now_us), now_us)
        new_tat = tat + interval * cost
        allow_at = new_tat - interval * burst
        if now_us < allow_at:
            return GcraDecision(False, (allow_at - now_us) / 1_000_000, 0)
        self.tats[key] = new_tat
        return GcraDecision(True, 0.0, (now_us - allow_at) // interval)

    async def update(self, key: str, updater: Updater, *, ttl_s: float) -> Any:
        self._trip("update")
        current = await self._read(key)
        if self.rerun_updates:
            updater(json.loads(json.dumps(current)))
        new, result = updater(current)
        if new is None:
            self.docs.pop(key, None)
        else:  # stored as JSON, as a real store would: a document must survive serialisation
            self.docs[key] = (json.dumps(new), self.clock.wall() + ttl_s)
        return result

    async def _read(self, key: str) -> dict[str, Any] | None:
        stored = self.docs.get(key)
        if stored is None or stored[1] <= self.clock.wall():
            return None
        doc: dict[str, Any] = json.loads(stored[0])
        return doc

    async def get(self, key: str) -> dict[str, Any] | None:
        self._trip("get")
        return await self._read(key)

    async def acquire(self, key: str, *, limit: int, lease_s: float, holder: str) -> bool:
        self._trip("acquire")
        held = self.slots.setdefault(key, set())
        if holder in held or len(held) < limit:
            held.add(holder)
            return True
        return False

    async def release(self, key: str, *, holder: str) -> None:
        self._trip("release")
        self.slots.get(key, set()).discard(holder)

    async def close(self) -> None:
        pass


Upstream = Recorder


def make_call(
    policy: ResolvedPolicy,
    *,
    client: str = "alice",
    session: str = "s1",
    server: str = "crm",
    tool: str = "refund",
    arguments: dict[str, Any] | None = None,
    request_id: str = "r1",
) -> ToolCall:
    args = arguments if arguments is not None else {"id": "C1"}
    return tool_call(
        server, tool, args, principal=client, session=session, request_id=request_id, policy=policy
    )


class Rig:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.store = DictStore(self.clock)
        self.upstream = Upstream()
        self.guard = RateLimits(self.store, self.clock)
        self.chain = build_chain([self.guard], self.upstream)

    async def refused(self, call: ToolCall) -> GatewayError:
        with pytest.raises((RateLimited, StateUnavailable)) as caught:
            await self.chain(call)
        return caught.value


def _policy(*limits: RateLimit, on_store_error: str = "open") -> ResolvedPolicy:
    return policy_of(rate_limits=RateLimitSettings(tuple(limits), on_store_error))  # type: ignore[arg-type]


async def test_a_burst_passes_then_the_wait_is_exact() -> None:
    rig = Rig()
    policy = _policy(RateLimit("per_client", limit=5, period_s=1.0, burst=5))
    for _ in range(5):
        await rig.chain(make_call(policy))
    err = await rig.refused(make_call(policy))
    assert err.retry_after_s == 0.2
    assert "5 per 1s for client alice" in err.message and "per_client" in err.message
    assert err.details == {
        "limit": 5,
        "name": "per_client",
        "period_s": 1.0,
        "burst": 5,
        "key": "rl:per_client:client=alice",
    }
    assert len(rig.upstream.calls) == 5, "the refused call never reached the upstream"
    rig.clock.advance(0.2)
    await rig.chain(make_call(policy))
    assert (await rig.refused(make_call(policy))).retry_after_s == 0.2


async def test_waiting_exactly_retry_after_is_enough_and_a_moment_less_is_not() -> None:
    rig = Rig()
    policy = _policy(RateLimit("slow", limit=2, period_s=1.0, burst=1))
    await rig.chain(make_call(policy))
    assert (await rig.refused(make_call(policy))).retry_after_s == 0.5
    rig.clock.advance(0.499)
    assert (await rig.refused(make_call(policy))).retry_after_s == 0.001
    rig.clock.advance(0.001)
    await rig.chain(make_call(policy))
    assert len(rig.upstream.calls) == 2


async def test_several_limits_all_must_admit() -> None:
    rig = Rig()
    policy = _policy(
        RateLimit("per_second", limit=2, period_s=1.0, burst=2),
        RateLimit("per_hour", limit=3, period_s=3600.0, burst=3),
    )
    await rig.chain(make_call(policy))
    await rig.chain(make_call(policy))
    err = await rig.refused(make_call(policy))
    assert err.details["name"] == "per_second" and err.retry_after_s == 0.5
    rig.clock.advance(1.0)
    await rig.chain(make_call(policy))
    err = await rig.refused(make_call(policy))
    assert err.details["name"] == "per_hour"
    assert "3 per 1h for client alice" in err.message
    # Three calls at t=0, 0 and 1 s: the fourth is admitted when the first's hour slot (1200 s) is free.
    assert err.retry_after_s == 1200.0 - 1.0
    assert len(rig.upstream.calls) == 3


async def test_a_later_refusal_leaves_the_earlier_admission_spent() -> None:
    """The documented trade-off: one gcra per limit, no refund when a later limit refuses."""
    rig = Rig()
    policy = _policy(
        RateLimit("loose", limit=10, period_s=1.0, burst=2),
        RateLimit("strict", limit=1, period_s=60.0, burst=1),
    )
    await rig.chain(make_call(policy))
    assert (await rig.refused(make_call(policy))).details["name"] == "strict"
    # The refused call spent "loose" too: its burst of 2 is gone although only one call ran.
    assert (await rig.refused(make_call(policy))).details["name"] == "loose"
    assert rig.store.round_trips["gcra"] == 5


async def test_keys_isolate_clients_sessions_and_tools() -> None:
    rig = Rig()
    per_client = _policy(RateLimit("c", limit=1, period_s=10.0))
    await rig.chain(make_call(per_client, client="alice"))
    await rig.chain(make_call(per_client, client="bob"))
    await rig.refused(make_call(per_client, client="alice", session="another"))

    per_session = _policy(RateLimit("s", limit=1, period_s=10.0, key=("session",)))
    await rig.chain(make_call(per_session, session="s1"))
    await rig.chain(make_call(per_session, session="s2"))
    await rig.refused(make_call(per_session, session="s1", client="bob"))

    per_tool = _policy(RateLimit("t", limit=1, period_s=10.0, key=("client", "tool")))
    await rig.chain(make_call(per_tool, tool="refund"))
    await rig.chain(make_call(per_tool, tool="lookup"))
    await rig.chain(make_call(per_tool, tool="refund", client="bob"))
    err = await rig.refused(make_call(per_tool, tool="refund"))
    assert err.details["key"] == "rl:t:client=alice:tool=crm__refund"
    assert "1 per 10s for client alice, tool crm__refund" in err.message

    per_server = _policy(RateLimit("up", limit=1, period_s=10.0, key=("server",)))
    await rig.chain(make_call(per_server, server="crm", client="x"))
    await rig.chain(make_call(per_server, server="erp", client="x"))
    await rig.refused(make_call(per_server, server="crm", client="y", tool="other"))


def test_key_parts_are_in_a_fixed_order_and_cannot_be_forged() -> None:
    policy = _policy()
    call = make_call(policy, client="eve:tool=crm__refund", session="alice/abc")
    both = limit_key(RateLimit("x", 1, 1.0, key=("tool", "client")), call)
    assert both == "rl:x:client=eve%3Atool%3Dcrm__refund:tool=crm__refund"
    assert limit_key(RateLimit("x", 1, 1.0, key=("session",)), call) == "rl:x:session=alice/abc"
    with pytest.raises(ValueError, match="unknown"):
        limit_key(RateLimit("x", 1, 1.0, key=("planet",)), call)


def test_waits_round_up_to_milliseconds_and_never_reach_zero() -> None:
    assert ceil_ms(0.0) == 0.001
    assert ceil_ms(0.0000001) == 0.001
    assert ceil_ms(0.2) == 0.2
    assert ceil_ms(0.2000001) == 0.2, "float noise below a microsecond is not a millisecond"
    assert ceil_ms(0.2004) == 0.201
    assert ceil_ms(1199.0) == 1199.0
    assert [format_period(p) for p in (1.0, 0.5, 60.0, 90.0, 3600.0, 86400.0)] == [
        "1s",
        "0.5s",
        "1min",
        "90s",
        "1h",
        "24h",
    ]


async def test_store_down_fail_open_lets_calls_through_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    rig.store.down = True
    policy = _policy(RateLimit("c", limit=1, period_s=10.0), on_store_error="open")
    with caplog.at_level(logging.WARNING, logger="interlock.guards.ratelimit"):
        for _ in range(5):
            await rig.chain(make_call(policy))
        rig.clock.advance(61.0)
        await rig.chain(make_call(policy))
    assert len(rig.upstream.calls) == 6
    warnings = [r for r in caplog.records if "fail-open" in r.getMessage()]
    assert len(warnings) == 2, "once, then again only after a minute"
    assert "4 similar suppressed" in warnings[1].getMessage()


async def test_store_down_fail_closed_refuses_with_the_reason() -> None:
    rig = Rig()
    rig.store.down = True
    policy = _policy(RateLimit("c", limit=1, period_s=10.0), on_store_error="closed")
    err = await rig.refused(make_call(policy))
    assert isinstance(err, StateUnavailable) and err.details["name"] == "c"
    assert "state store" in err.hint and err.retry_after_s == 1.0 and err.retryable
    assert rig.upstream.calls == []


async def test_no_limits_costs_no_round_trip() -> None:
    rig = Rig()
    await rig.chain(make_call(_policy()))
    assert rig.store.round_trips == Counter()
