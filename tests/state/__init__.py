"""Helpers the state store tests share: the stores under test, and real Redis servers.

Redis tests run against a real server: ``INTERLOCK_TEST_REDIS_URL`` if set, else the one on
127.0.0.1:6379 (``.ci/run`` starts it), else a private ``redis-server`` started for this test run.
They skip, saying why, only when none of these is possible.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from functools import cache
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from gateway.core.clock import ManualClock
from gateway.state import MemoryStateStore, SqliteStateStore, StateStore
from gateway.state.redis import RedisStateStore
from tests.support import free_port, kill_group

KINDS = ["memory", "sqlite", "redis"]
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
TEST_LIMIT_S = 10.0
"""The time limit around every test body."""


def answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


@contextmanager
def redis_server(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server (no persistence) in its own process group, killed on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    port = port or free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.02)
        yield url, proc
    finally:
        kill_group(proc)


@cache
def _shared_redis_url() -> str | None:
    url = os.environ.get("INTERLOCK_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if answers(url):
        return url
    if shutil.which("redis-server") is None:
        return None
    server = redis_server()
    started, _ = server.__enter__()
    atexit.register(server.__exit__, None, None, None)
    return started


def shared_redis_url() -> str:
    url = _shared_redis_url()
    if url is None:
        pytest.skip(
            "no Redis server answers on 127.0.0.1:6379 (or INTERLOCK_TEST_REDIS_URL) and redis-server "
            "is not installed to start one; .ci/run installs and starts it"
        )
    return url


def random_prefix() -> str:
    return f"interlock-test:{uuid.uuid4().hex[:12]}:"


async def delete_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def open_redis(url: str, prefix: str, clock: ManualClock, **options: str) -> RedisStateStore:
    query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, **options}.items())
    return RedisStateStore(f"{url}?{query}", clock)


@asynccontextmanager
async def open_test_store(kind: str, tmp_path: Path, clock: ManualClock) -> AsyncIterator[StateStore]:
    """A fresh store of ``kind``: memory, a SQLite file in tmp_path, or a random prefix in Redis."""
    if kind == "memory":
        store: StateStore = MemoryStateStore(clock)
    elif kind == "sqlite":
        store = SqliteStateStore(tmp_path / "state.db", clock)
    else:
        url, prefix = shared_redis_url(), random_prefix()
        store = open_redis(url, prefix, clock)
    try:
        yield store
    finally:
        await store.close()
        if kind == "redis":
            with suppress(redis.RedisError, OSError):
                await delete_prefix(url, prefix)
