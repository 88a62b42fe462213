"""Redis specifics: a dead or silent server fails fast, the store's circuit, NOSCRIPT, Lua = Python."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import pytest
import redis

import gateway.state.redis as redis_store
from gateway.core.clock import ManualClock
from gateway.state import StoreUnavailable
from gateway.state.gcra import decide
from gateway.state.redis import RedisStateStore, redact
from tests.state import TEST_LIMIT_S, delete_prefix, open_redis, random_prefix, redis_server, shared_redis_url
from tests.support import free_port, kill_group

pytestmark = pytest.mark.anyio

FAST = "timeout_ms=100&connect_timeout_ms=100"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def shared(clock: ManualClock) -> AsyncIterator[tuple[RedisStateStore, redis.Redis]]:
    """A store on the shared server with a random prefix, and a plain client to look underneath."""
    url, prefix = shared_redis_url(), random_prefix()
    store = open_redis(url, prefix, clock)
    client = redis.Redis.from_url(url, socket_timeout=2, decode_responses=True)
    try:
        yield store, client
    finally:
        await store.close()
        client.close()
        await delete_prefix(url, prefix)


@asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, Callable[[], int]]]:
    """A TCP server that accepts connections and never answers: the worst kind of dead Redis."""
    accepted = 0

    async def swallow(stream: anyio.abc.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        async with stream:
            await anyio.sleep_forever()

    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(listener.serve, swallow)
        yield listener.extra(anyio.abc.SocketAttribute.local_port), lambda: accepted
        tg.cancel_scope.cancel()


def gcra_call(store: RedisStateStore, clock: ManualClock, key: str = "k") -> Any:
    return store.gcra(key, period_s=1.0, limit=10, burst=10, now=clock.wall())


# -- outages -------------------------------------------------------------------------------------


async def test_a_dead_redis_fails_fast_naming_the_store_without_its_password(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens here
    store = RedisStateStore(f"redis://agent:s3cret@127.0.0.1:{port}/0", clock)
    started = time.perf_counter()
    with anyio.fail_after(2), pytest.raises(StoreUnavailable) as caught:
        await gcra_call(store, clock)
    assert time.perf_counter() - started < 1.0
    assert f"redis://agent:***@127.0.0.1:{port}/0" in str(caught.value)
    assert "s3cret" not in str(caught.value) and "s3cret" not in caplog.text
    for operation in (
        store.update("d", lambda doc: ({}, None), ttl_s=1),
        store.get("d"),
        store.acquire("s", limit=1, lease_s=1, holder="h"),
        store.release("s", holder="h"),
    ):
        with anyio.fail_after(2), pytest.raises(StoreUnavailable):
            await operation
    with anyio.fail_after(2):
        await store.close()


async def test_a_silent_redis_times_out_then_the_store_fails_fast_without_connecting(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="interlock.state")
    with anyio.fail_after(TEST_LIMIT_S):
        async with silent_server() as (port, accepted):
            store = RedisStateStore(f"redis://127.0.0.1:{port}/0?{FAST}", clock)
            with anyio.fail_after(2), pytest.raises(StoreUnavailable, match="unreachable"):
                await gcra_call(store, clock)
            assert accepted() == 1
            for _ in range(50):  # within the fail-fast window: no connection attempt at all
                with pytest.raises(StoreUnavailable, match="failing fast"):
                    await gcra_call(store, clock)
            assert accepted() == 1
            clock.advance(1.01)  # the window is over: the next call probes
            with pytest.raises(StoreUnavailable, match="unreachable"):
                await gcra_call(store, clock)
            assert accepted() == 2
            with pytest.raises(StoreUnavailable, match="failing fast"):
                await gcra_call(store, clock)
            await store.close()
    outage_lines = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outage_lines) == 1, "an outage is logged once, not per call"
    assert "guards apply their on_store_error policy" in outage_lines[0].getMessage()


async def test_redis_dying_mid_run_and_coming_back(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="interlock.state")
    port = free_port()
    with anyio.fail_after(TEST_LIMIT_S):
        with redis_server(port) as (url, proc):
            store = RedisStateStore(f"{url}?{FAST}", clock)
            assert (await gcra_call(store, clock)).allowed  # pooled connections, script cached
            kill_group(proc)
            with anyio.fail_after(2), pytest.raises(StoreUnavailable, match="unreachable"):
                await gcra_call(store, clock)
            with pytest.raises(StoreUnavailable, match="failing fast"):
                await store.update("d", lambda doc: ({}, None), ttl_s=5)
        with redis_server(port):  # a fresh server: empty, and no scripts cached (NOSCRIPT)
            clock.advance(1.01)
            assert (await gcra_call(store, clock)).remaining == 9
            assert await store.update("d", lambda doc: ({"n": 1}, "ok"), ttl_s=5) == "ok"
            assert await store.acquire("s", limit=1, lease_s=5, holder="h")
            await store.close()
    assert [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]


async def test_a_command_redis_refuses_is_unavailable_but_does_not_open_the_circuit(
    shared: tuple[RedisStateStore, redis.Redis], clock: ManualClock
) -> None:
    store, client = shared
    client.hset(f"{store.prefix}gcra:wrong", "x", "1")  # a key of the wrong type
    with anyio.fail_after(TEST_LIMIT_S):
        with pytest.raises(StoreUnavailable, match="refused"):
            await gcra_call(store, clock, "wrong")
        assert (await gcra_call(store, clock, "right")).allowed


async def test_scripts_flushed_from_the_server_are_sent_again(clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S), redis_server() as (url, _):
        store = RedisStateStore(url, clock)
        assert (await gcra_call(store, clock)).remaining == 9
        with redis.Redis.from_url(url) as client:
            client.script_flush()
        assert (await gcra_call(store, clock)).remaining == 8
        await store.close()


# -- what Redis holds ----------------------------------------------------------------------------


async def test_keys_are_namespaced_and_expire_on_their_own(
    shared: tuple[RedisStateStore, redis.Redis], clock: ManualClock
) -> None:
    store, client = shared
    with anyio.fail_after(TEST_LIMIT_S):
        await store.gcra("k", period_s=10.0, limit=1, burst=1, now=clock.wall())
        await store.update("k", lambda doc: ({"a": 1}, None), ttl_s=30)
        await store.acquire("k", limit=1, lease_s=20, holder="h")
    assert sorted(client.keys(f"{store.prefix}*")) == [
        f"{store.prefix}{kind}:k" for kind in ("doc", "gcra", "slots")
    ]
    assert 9_000 < client.pttl(f"{store.prefix}gcra:k") <= 10_000
    assert 29_000 < client.pttl(f"{store.prefix}doc:k") <= 30_000
    assert 19_000 < client.pttl(f"{store.prefix}slots:k") <= 20_000


async def test_the_default_prefix_is_interlock(clock: ManualClock) -> None:
    url, key = shared_redis_url(), f"test-{random_prefix()}"
    store = RedisStateStore(url, clock)
    try:
        with anyio.fail_after(TEST_LIMIT_S):
            await gcra_call(store, clock, key)
        with redis.Redis.from_url(url) as client:
            assert client.exists(f"interlock:gcra:{key}")
    finally:
        with anyio.fail_after(TEST_LIMIT_S):
            await store.close()
            await delete_prefix(url, f"interlock:gcra:{key}")


async def test_the_lua_script_decides_exactly_like_the_python_arithmetic(
    shared: tuple[RedisStateStore, redis.Redis],
) -> None:
    store, _ = shared
    rng = random.Random(4)
    with anyio.fail_after(TEST_LIMIT_S):
        for case, (now, period_s, limit, burst) in enumerate(
            [(1000.0, 1.0, 7, 3), (1_767_225_600.25, 60.0, 1000, 50), (5.0, 0.3, 1, 1), (0.0, 3600, 3, 2)]
        ):
            tat = None
            for _ in range(150):
                # Mostly forward; now and then a clock stepping back, to cover the clamp too.
                now += rng.choice(
                    [0.0, rng.uniform(0, 2 * period_s / limit)] * 4 + [-rng.uniform(0, period_s)]
                )
                cost = rng.randint(0, burst)
                expected, new_tat = decide(
                    tat, now=now, period_s=period_s, limit=limit, burst=burst, cost=cost
                )
                tat = new_tat if new_tat is not None else tat
                got = await store.gcra(
                    f"mirror{case}", period_s=period_s, limit=limit, burst=burst, now=now, cost=cost
                )
                assert got == expected


# -- updates under contention --------------------------------------------------------------------


def bump_version_underneath(client: redis.Redis, key: str, times: int) -> Callable[..., Any]:
    """An updater that, on its first ``times`` runs, lets "another replica" write the key first."""
    runs = 0

    def updater(doc: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        nonlocal runs
        runs += 1
        if runs <= times:
            client.hincrby(key, "v", 1)
        return {"runs": runs}, runs

    return updater


async def test_a_writer_that_keeps_losing_claims_the_key_and_wins(
    shared: tuple[RedisStateStore, redis.Redis],
) -> None:
    store, client = shared
    full = f"{store.prefix}doc:hot"
    with anyio.fail_after(TEST_LIMIT_S):
        assert await store.update("hot", bump_version_underneath(client, full, 2), ttl_s=30) == 3
    assert client.hget(full, "c") is None and client.hget(full, "ce") is None  # the claim is gone
    assert await store.get("hot") == {"runs": 3}


async def test_an_updater_that_raises_while_holding_a_claim_gives_it_back(
    shared: tuple[RedisStateStore, redis.Redis],
) -> None:
    store, client = shared
    full = f"{store.prefix}doc:hot"
    inner = bump_version_underneath(client, full, 2)

    def fails_third_time(doc: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        new, runs = inner(doc)
        if runs == 3:
            assert client.hget(full, "c") is not None  # claimed after two lost races
            raise RuntimeError("updater bug")
        return new, runs

    with anyio.fail_after(TEST_LIMIT_S), pytest.raises(RuntimeError):
        await store.update("hot", fails_third_time, ttl_s=30)
    assert client.hget(full, "c") is None


async def test_a_live_claim_of_another_writer_holds_writes_off_and_an_expired_one_does_not(
    shared: tuple[RedisStateStore, redis.Redis], clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, client = shared
    monkeypatch.setattr(redis_store, "CAS_BUDGET_S", 0.05)
    full = f"{store.prefix}doc:claimed"
    client.hset(full, mapping={"c": "another-replica", "ce": repr(clock.wall() + 60)})
    with anyio.fail_after(TEST_LIMIT_S):
        with pytest.raises(StoreUnavailable, match="kept changing"):
            await store.update("claimed", lambda doc: ({"mine": True}, None), ttl_s=30)
        clock.advance(61)
        await store.update("claimed", lambda doc: ({"mine": True}, None), ttl_s=30)
    assert await store.get("claimed") == {"mine": True}


# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@cache:6379/1?timeout_ms=5", "redis://:***@cache:6379/1"),
        ("rediss://user:pw@[::1]:6380/0", "rediss://user:***@[::1]:6380/0"),
        ("redis://user@cache", "redis://user@cache"),
    ],
)
def test_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    assert redact(url) == shown
