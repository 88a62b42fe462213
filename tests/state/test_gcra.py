"""GCRA arithmetic, exact, on a manual clock: the pure function and every store that runs it."""

from __future__ import annotations

import math

import anyio
import pytest

from gateway.core.clock import ManualClock
from gateway.state import StateStore
from gateway.state.gcra import check_params, decide
from tests.state import TEST_LIMIT_S

pytestmark = pytest.mark.anyio

EXACT = 1e-9


# -- the pure function ---------------------------------------------------------------------------


def test_a_fresh_key_admits_and_counts_down_the_burst() -> None:
    tat = None
    remaining = []
    for _ in range(3):
        decision, tat = decide(tat, now=100.0, period_s=1.0, limit=4, burst=3)
        assert decision.allowed and decision.retry_after_s == 0.0
        remaining.append(decision.remaining)
    assert remaining == [2, 1, 0]
    assert tat == pytest.approx(100.75, abs=EXACT)


def test_a_refusal_names_the_exact_wait_and_changes_nothing() -> None:
    decision, new_tat = decide(100.5, now=100.0, period_s=1.0, limit=4, burst=2)
    # T = 0.25, tau = 0.25: TAT - now = 0.5 > tau, admitted when TAT - now = tau, 0.25 s later.
    assert not decision.allowed and new_tat is None
    assert decision.retry_after_s == pytest.approx(0.25, abs=EXACT)
    assert decision.remaining == 0


def test_a_cost_above_one_needs_room_for_all_of_it() -> None:
    decision, tat = decide(None, now=0.0, period_s=10.0, limit=10, burst=5, cost=3)
    assert decision.allowed and decision.remaining == 2 and tat == pytest.approx(3.0)
    refused, _ = decide(tat, now=0.0, period_s=10.0, limit=10, burst=5, cost=3)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(1.0, abs=EXACT)
    assert refused.remaining == 2  # two single calls would still fit


def test_cost_zero_is_a_peek() -> None:
    decision, tat = decide(101.0, now=100.0, period_s=1.0, limit=1, burst=3)
    assert decision.allowed and tat is not None
    peek, unchanged = decide(tat, now=100.0, period_s=1.0, limit=1, burst=3, cost=0)
    assert peek.allowed and unchanged is None and peek.remaining == decision.remaining


@pytest.mark.parametrize(
    ("period_s", "limit", "burst", "cost"),
    [
        (0, 1, 1, 1),
        (-1, 1, 1, 1),
        (math.inf, 1, 1, 1),
        (1, 0, 1, 1),
        (1, 1, 0, 1),
        (1, 1, 2, 3),
        (1, 1, 1, -1),
    ],
)
def test_meaningless_limits_are_rejected(period_s: float, limit: int, burst: int, cost: int) -> None:
    with pytest.raises(ValueError):
        check_params(period_s, limit, burst, cost)


def test_epoch_times_keep_the_schedule() -> None:
    """At wall-clock epoch seconds a float has ~0.2 us of resolution: calls on the schedule still pass."""
    now, tat = 1_767_225_600.123, None
    for _ in range(10_000):
        decision, tat = decide(tat, now=now, period_s=1.0, limit=1000, burst=1)
        assert decision.allowed
        now += 0.001


# -- every store ---------------------------------------------------------------------------------


async def test_a_full_burst_is_admitted_at_once_and_the_next_waits_exactly_one_interval(
    store: StateStore, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        period_s, limit, burst = 1.0, 10, 5
        emission = period_s / limit
        now = clock.monotonic()
        for expected_remaining in range(burst - 1, -1, -1):
            decision = await store.gcra("k", period_s=period_s, limit=limit, burst=burst, now=now)
            assert decision.allowed and decision.remaining == expected_remaining
        refused = await store.gcra("k", period_s=period_s, limit=limit, burst=burst, now=now)
        assert not refused.allowed and refused.remaining == 0
        assert abs(refused.retry_after_s - emission) < EXACT
        clock.advance(refused.retry_after_s)
        admitted = await store.gcra("k", period_s=period_s, limit=limit, burst=burst, now=clock.monotonic())
        assert admitted.allowed and admitted.remaining == 0


async def test_refusals_cost_nothing(store: StateStore, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        now = clock.monotonic()
        assert (await store.gcra("k", period_s=2.0, limit=1, burst=1, now=now)).allowed
        for _ in range(20):
            refused = await store.gcra("k", period_s=2.0, limit=1, burst=1, now=now)
            assert not refused.allowed and abs(refused.retry_after_s - 2.0) < EXACT
        clock.advance(1.5)
        refused = await store.gcra("k", period_s=2.0, limit=1, burst=1, now=clock.monotonic())
        assert abs(refused.retry_after_s - 0.5) < EXACT
        clock.advance(0.5)
        assert (await store.gcra("k", period_s=2.0, limit=1, burst=1, now=clock.monotonic())).allowed


@pytest.mark.parametrize("burst", [1, 3])
async def test_a_steady_rate_at_exactly_the_interval_is_always_admitted(
    store: StateStore, clock: ManualClock, burst: int
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        emission = 1.0 / 7  # not a binary fraction: sums round
        for _ in range(burst):
            assert (await store.gcra("k", period_s=1.0, limit=7, burst=burst, now=clock.monotonic())).allowed
        for _ in range(200):
            clock.advance(emission)
            decision = await store.gcra("k", period_s=1.0, limit=7, burst=burst, now=clock.monotonic())
            assert decision.allowed and decision.remaining == 0
        early = await store.gcra("k", period_s=1.0, limit=7, burst=burst, now=clock.monotonic())
        assert not early.allowed and abs(early.retry_after_s - emission) < EXACT


async def test_a_long_idle_does_not_bank_more_than_the_burst(store: StateStore, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        assert (await store.gcra("k", period_s=1.0, limit=1, burst=4, now=clock.monotonic())).allowed
        clock.advance(3600)
        now = clock.monotonic()
        admitted = [
            (await store.gcra("k", period_s=1.0, limit=1, burst=4, now=now)).allowed for _ in range(6)
        ]
        assert admitted == [True] * 4 + [False] * 2


async def test_limits_on_different_keys_are_independent(store: StateStore, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        now = clock.monotonic()
        assert (await store.gcra("a", period_s=1.0, limit=1, burst=1, now=now)).allowed
        assert not (await store.gcra("a", period_s=1.0, limit=1, burst=1, now=now)).allowed
        assert (await store.gcra("b", period_s=1.0, limit=1, burst=1, now=now)).allowed


async def test_wall_clock_epoch_times_work_in_every_store(store: StateStore, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        for _ in range(3):
            assert (await store.gcra("k", period_s=1.0, limit=20, burst=3, now=clock.wall())).allowed
        refused = await store.gcra("k", period_s=1.0, limit=20, burst=3, now=clock.wall())
        assert not refused.allowed and refused.retry_after_s == pytest.approx(0.05, abs=1e-6)
        clock.advance(0.05)
        assert (await store.gcra("k", period_s=1.0, limit=20, burst=3, now=clock.wall())).allowed


async def test_bad_parameters_raise_before_touching_the_store(store: StateStore, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S), pytest.raises(ValueError, match="limit"):
        await store.gcra("k", period_s=1.0, limit=0, burst=1, now=clock.monotonic())


def test_a_clock_that_stepped_back_waits_at_most_one_full_burst() -> None:
    # A TAT an hour ahead of now can only come from a clock that moved back (or a skewed replica).
    decision, _ = decide(100.0 + 3600, now=100.0, period_s=1.0, limit=2, burst=4)
    assert not decision.allowed
    assert decision.retry_after_s == pytest.approx(0.5, abs=EXACT)  # one interval, not an hour
