"""One behavioural suite, run against every store: documents, concurrency slots, keys, the factory."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from gateway.core.clock import ManualClock
from gateway.state import MemoryStateStore, SqliteStateStore, StateStore, StoreUnavailable, open_store
from gateway.state.redis import RedisStateStore
from tests.state import TEST_LIMIT_S, open_test_store

pytestmark = pytest.mark.anyio


def increment(doc: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
    count = (doc or {}).get("count", 0) + 1
    return {**(doc or {}), "count": count}, count


# -- documents -----------------------------------------------------------------------------------


async def test_update_creates_changes_and_deletes_a_document(store: StateStore) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        assert await store.get("doc") is None
        seen: list[dict[str, Any] | None] = []

        def create(doc: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
            seen.append(doc)
            return {"name": "é", "items": [1, 2.5, None, True]}, "created"

        assert await store.update("doc", create, ttl_s=60) == "created"
        assert seen == [None]
        assert await store.update("doc", increment, ttl_s=60) == 1
        assert await store.get("doc") == {"name": "é", "items": [1, 2.5, None, True], "count": 1}
        assert await store.update("doc", lambda doc: (None, "gone"), ttl_s=60) == "gone"
        assert await store.get("doc") is None
        assert await store.update("doc", increment, ttl_s=60) == 1


async def test_an_updater_that_raises_changes_nothing(store: StateStore) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        await store.update("doc", increment, ttl_s=60)

        def broken(doc: dict[str, Any] | None) -> tuple[dict[str, Any], None]:
            assert doc is not None
            doc["count"] = 99  # mutating its own copy must not leak into the store
            raise RuntimeError("bug in the updater")

        with pytest.raises(RuntimeError, match="bug"):
            await store.update("doc", broken, ttl_s=60)
        assert await store.get("doc") == {"count": 1}


async def test_an_updater_must_return_a_json_object(store: StateStore) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        with pytest.raises(TypeError, match="dict or None"):
            await store.update("doc", lambda doc: ([1, 2], None), ttl_s=60)  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError):
            await store.update("doc", lambda doc: ({"when": object()}, None), ttl_s=60)
        with pytest.raises(ValueError, match="ttl_s"):
            await store.update("doc", increment, ttl_s=0)
        assert await store.get("doc") is None


async def test_the_same_key_means_different_things_to_each_operation(
    store: StateStore, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        key = "client:a b:ü/tool*?[x]"
        await store.update(key, increment, ttl_s=60)
        assert (await store.gcra(key, period_s=1.0, limit=1, burst=1, now=clock.monotonic())).allowed
        assert await store.acquire(key, limit=1, lease_s=10, holder="h")
        assert await store.get(key) == {"count": 1}
        await store.release(key, holder="h")
        assert await store.get(key) == {"count": 1}


async def test_documents_expire_after_their_ttl(tmp_path: Path, clock: ManualClock) -> None:
    # Redis expires documents on its own clock; test_redis.py checks the PTTL it sets instead.
    for kind in ("memory", "sqlite"):
        async with open_test_store(kind, tmp_path / kind, clock) as store:
            with anyio.fail_after(TEST_LIMIT_S):
                await store.update("doc", increment, ttl_s=10)
                clock.advance(9.9)
                assert await store.get("doc") == {"count": 1}
                assert await store.update("doc", increment, ttl_s=10) == 2  # a write renews the TTL
                clock.advance(9.9)
                assert await store.get("doc") == {"count": 2}
                clock.advance(0.2)
                assert await store.get("doc") is None
                assert await store.update("doc", increment, ttl_s=10) == 1


# -- concurrency slots ---------------------------------------------------------------------------


async def test_slots_admit_up_to_the_limit_and_free_on_release(store: StateStore) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        assert await store.acquire("up", limit=2, lease_s=30, holder="a")
        assert await store.acquire("up", limit=2, lease_s=30, holder="b")
        assert not await store.acquire("up", limit=2, lease_s=30, holder="c")
        assert await store.acquire("up", limit=2, lease_s=30, holder="a")  # a holder renews its own lease
        await store.release("up", holder="a")
        assert await store.acquire("up", limit=2, lease_s=30, holder="c")
        assert not await store.acquire("up", limit=2, lease_s=30, holder="d")
        await store.release("up", holder="nobody")  # releasing what one does not hold is harmless
        await store.release("never-used", holder="a")


async def test_a_lease_expires_if_its_holder_never_releases(store: StateStore, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        assert await store.acquire("up", limit=1, lease_s=5, holder="crashed")
        clock.advance(4.9)
        assert not await store.acquire("up", limit=1, lease_s=5, holder="next")
        clock.advance(0.2)
        assert await store.acquire("up", limit=1, lease_s=5, holder="next")
        await store.release("up", holder="crashed")  # a late release must not free "next"'s slot
        assert not await store.acquire("up", limit=1, lease_s=5, holder="third")


async def test_slot_arguments_are_checked(store: StateStore) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        with pytest.raises(ValueError, match="limit"):
            await store.acquire("up", limit=0, lease_s=5, holder="a")
        with pytest.raises(ValueError, match="lease_s"):
            await store.acquire("up", limit=1, lease_s=0, holder="a")


# -- SQLite: survives a restart, bounded waits ---------------------------------------------------


async def test_sqlite_keeps_everything_across_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        first = SqliteStateStore(tmp_path / "state.db", clock)
        await first.update("doc", increment, ttl_s=60)
        assert await first.acquire("up", limit=1, lease_s=60, holder="a")
        assert (await first.gcra("k", period_s=60.0, limit=1, burst=1, now=clock.wall())).allowed
        await first.close()
        second = SqliteStateStore(tmp_path / "state.db", clock)
        assert await second.get("doc") == {"count": 1}
        assert not await second.acquire("up", limit=1, lease_s=60, holder="b")
        refused = await second.gcra("k", period_s=60.0, limit=1, burst=1, now=clock.wall())
        assert not refused.allowed and refused.retry_after_s == pytest.approx(60.0)
        await second.close()


async def test_a_sqlite_file_locked_too_long_is_unavailable_not_a_hang(
    tmp_path: Path, clock: ManualClock
) -> None:
    store = SqliteStateStore(tmp_path / "state.db", clock, busy_timeout_ms=50)
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        with anyio.fail_after(2), pytest.raises(StoreUnavailable, match="locked"):
            await store.update("doc", increment, ttl_s=60)
        other.execute("ROLLBACK")
        with anyio.fail_after(TEST_LIMIT_S):
            assert await store.update("doc", increment, ttl_s=60) == 1
    finally:
        other.close()
        with anyio.fail_after(TEST_LIMIT_S):
            await store.close()


# -- the memory store's bound --------------------------------------------------------------------


async def test_the_memory_store_stays_bounded_dropping_the_least_recently_used(clock: ManualClock) -> None:
    store = MemoryStateStore(clock, max_keys=3)
    with anyio.fail_after(TEST_LIMIT_S):
        for key in "abc":
            await store.update(key, increment, ttl_s=60)
        await store.get("a")  # a is now the most recently used
        await store.update("d", increment, ttl_s=60)
        assert len(store) == 3
        assert await store.get("b") is None
        assert await store.get("a") == {"count": 1}


# -- the factory ---------------------------------------------------------------------------------


async def test_open_store_picks_the_store_from_the_url(tmp_path: Path, clock: ManualClock) -> None:
    memory = open_store("memory://?max_keys=10", tmp_path, clock)
    assert isinstance(memory, MemoryStateStore) and memory.name == "memory"
    relative = open_store("sqlite:///sub/state.db", tmp_path, clock)
    assert isinstance(relative, SqliteStateStore) and relative.path == tmp_path / "sub" / "state.db"
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db?busy_timeout_ms=100", Path("/elsewhere"), clock)
    assert isinstance(absolute, SqliteStateStore) and absolute.path == tmp_path / "abs.db"
    remote = open_store("redis://user:secret@127.0.0.1:1/2?timeout_ms=50&prefix=x:", tmp_path, clock)
    assert isinstance(remote, RedisStateStore) and remote.prefix == "x:"
    assert remote.url == "redis://user:***@127.0.0.1:1/2"
    tls = open_store("rediss://cache.example:6380/0", tmp_path, clock)
    assert isinstance(tls, RedisStateStore) and tls.url == "rediss://cache.example:6380/0"
    with anyio.fail_after(TEST_LIMIT_S):
        for store in (memory, relative, absolute, remote, tls):
            await store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://db/x", "unsupported state store"),
        ("sqlite:///", "no file name"),
        ("memory://?size=3", "unknown option"),
        ("sqlite:///x.db?wal=off", "unknown option"),
        ("redis://127.0.0.1:6379/0?timeout_ms=0", "timeout_ms"),
        ("redis://127.0.0.1:6379/0?max_connections=lots", "max_connections"),
    ],
)
def test_open_store_rejects_what_it_cannot_open(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(url, tmp_path, ManualClock())
