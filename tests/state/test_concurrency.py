"""Atomicity under load: concurrent tasks, several Redis clients (replicas), two processes on SQLite."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from gateway.core.clock import ManualClock, SystemClock
from gateway.state import SqliteStateStore, StateStore
from tests.state import (
    TEST_LIMIT_S,
    delete_prefix,
    open_redis,
    random_prefix,
    shared_redis_url,
)
from tests.support import ROOT

pytestmark = pytest.mark.anyio


def increment(doc: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
    count = (doc or {}).get("count", 0) + 1
    return {"count": count}, count


async def gcra_storm(stores: list[StateStore], calls_each: int, now: float) -> int:
    admitted = 0

    async def one(store: StateStore) -> None:
        nonlocal admitted
        # A long period: Redis expires a GCRA key after (tat - now) of real time, and a storm on a
        # loaded machine may take longer than one second; the logical time here never moves.
        decision = await store.gcra("storm", period_s=600.0, limit=10, burst=10, now=now)
        admitted += decision.allowed

    async with anyio.create_task_group() as tg:
        for _ in range(calls_each):
            for store in stores:
                tg.start_soon(one, store)
    return admitted


async def update_storm(stores: list[StateStore], calls_each: int) -> list[int]:
    results: list[int] = []

    async def one(store: StateStore) -> None:
        results.append(await store.update("counter", increment, ttl_s=60))

    async with anyio.create_task_group() as tg:
        for _ in range(calls_each):
            for store in stores:
                tg.start_soon(one, store)
    return results


async def slot_churn(stores: list[StateStore], limit: int, tasks_each: int, rounds: int) -> tuple[int, int]:
    in_flight = peak = admitted = 0

    async def worker(store: StateStore, name: str) -> None:
        nonlocal in_flight, peak, admitted
        for _ in range(rounds):
            if await store.acquire("slots", limit=limit, lease_s=60, holder=name):
                admitted += 1
                in_flight += 1
                peak = max(peak, in_flight)
                await anyio.lowlevel.checkpoint()  # hold the slot across a scheduling point
                in_flight -= 1
                await store.release("slots", holder=name)
            else:
                await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for i, store in enumerate(stores):
            for j in range(tasks_each):
                tg.start_soon(worker, store, f"holder-{i}-{j}")
    return peak, admitted


# -- one store, many tasks -----------------------------------------------------------------------


async def test_100_concurrent_gcra_calls_admit_exactly_the_limit(
    store: StateStore, clock: ManualClock
) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        assert await gcra_storm([store], 100, clock.monotonic()) == 10


async def test_50_concurrent_updates_increment_exactly_50_times(store: StateStore) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        results = await update_storm([store], 50)
        assert sorted(results) == list(range(1, 51))
        assert await store.get("counter") == {"count": 50}


async def test_concurrent_acquires_never_exceed_the_limit(store: StateStore) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        peak, admitted = await slot_churn([store], limit=3, tasks_each=12, rounds=5)
        assert 1 <= peak <= 3 and admitted >= 3


async def test_concurrent_acquires_without_releases_take_exactly_the_limit(store: StateStore) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        taken: list[bool] = []

        async def take(holder: str) -> None:
            taken.append(await store.acquire("all", limit=4, lease_s=60, holder=holder))

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(take, f"h{i}")
        assert taken.count(True) == 4


# -- several replicas on one Redis ---------------------------------------------------------------


@pytest.fixture
async def replicas(clock: ManualClock) -> AsyncIterator[list[StateStore]]:
    """Four independent Redis stores (own pools, own in-process locks) on one prefix."""
    url, prefix = shared_redis_url(), random_prefix()
    stores: list[StateStore] = [open_redis(url, prefix, clock) for _ in range(4)]
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()
        await delete_prefix(url, prefix)


async def test_replicas_share_one_rate_limit(replicas: list[StateStore], clock: ManualClock) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        assert await gcra_storm(replicas, 25, clock.wall()) == 10


async def test_replicas_updating_one_document_lose_no_increment(replicas: list[StateStore]) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        results = await update_storm(replicas, 25)  # conflicts between replicas go through the CAS retry
        assert sorted(results) == list(range(1, 101))
        assert await replicas[0].get("counter") == {"count": 100}


async def test_replicas_share_concurrency_slots(replicas: list[StateStore]) -> None:
    with anyio.fail_after(TEST_LIMIT_S):
        peak, admitted = await slot_churn(replicas, limit=2, tasks_each=5, rounds=5)
        assert 1 <= peak <= 2 and admitted >= 2


# -- two processes on one SQLite file ------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import anyio

    from gateway.core.clock import SystemClock
    from gateway.state import SqliteStateStore


    def increment(doc):
        count = (doc or {}).get("count", 0) + 1
        return {"count": count}, count


    async def main(path: str, n: int) -> None:
        store = SqliteStateStore(Path(path), SystemClock())
        print("ready", flush=True)
        sys.stdin.readline()  # start together
        for _ in range(n):
            await store.update("counter", increment, ttl_s=3600)
        await store.close()


    anyio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


async def test_two_processes_on_one_sqlite_file_keep_a_counter_exact(tmp_path: Path) -> None:
    path, per_process = tmp_path / "shared.db", 300
    await SqliteStateStore(path, SystemClock()).close()  # create the schema before the race
    command = [sys.executable, "-c", WORKER, str(path), str(per_process)]
    with anyio.fail_after(30):
        procs = [await anyio.open_process(command, cwd=ROOT, start_new_session=True) for _ in range(2)]
        try:
            for proc in procs:
                assert proc.stdout is not None
                ready = await BufferedByteReceiveStream(proc.stdout).receive_until(b"\n", 100)
                assert ready == b"ready"
            for proc in procs:  # start together
                assert proc.stdin is not None
                await proc.stdin.send(b"go\n")
            assert [await proc.wait() for proc in procs] == [0, 0]
        finally:
            for proc in procs:
                if proc.returncode is None:
                    with suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
                await proc.aclose()
        store = SqliteStateStore(path, SystemClock())
        assert await store.get("counter") == {"count": 2 * per_process}
        await store.close()
