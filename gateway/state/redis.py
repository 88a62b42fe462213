"""The shared state store: Redis, so that N gateways behind a load balancer behave as one.

Round trips per operation (in the steady state, scripts cached on the server):

- ``gcra``: 1 (``EVALSHA`` of the GCRA script; the arithmetic mirrors ``gateway/state/gcra.py``);
- ``acquire``: 1 (``EVALSHA``: drop expired leases, then admit if fewer than ``limit`` holders);
- ``release``: 1 (``ZREM``); ``get``: 1 (``HGET``);
- ``update``: 2, optimistic compare-and-set: ``HMGET`` the version and document, run the updater
  here, then ``EVALSHA`` a script that writes only if the version is unchanged. A conflict (another
  replica wrote in between) answers with the current version and document, so each retry costs one
  more round trip; writers in this process queue per key, so conflicts only come from other
  replicas. From its second try on, a writer that loses also *claims* the key (for at most
  ``CLAIM_S``): no one else may write meanwhile, so its next try wins and a starved replica gets
  its turn. Versions still decide what is written; a claim only orders the writers. After
  ``CAS_BUDGET_S`` of conflicts the store gives up with ``StoreUnavailable``.
A script missing from the server's cache (``NOSCRIPT``: a restart, ``SCRIPT FLUSH``, a failover) is
sent once with ``EVAL``, which caches it again.

Time: the GCRA uses the ``now`` its caller passes (replicas must pass a clock they share: wall-clock
epoch seconds). Lease expiry uses ``clock.wall()`` of the store's clock, passed into the scripts
as an argument rather than read from Redis ``TIME``, so every replica judges a lease the same way
(given NTP-synchronised hosts) and tests can drive it with a manual clock. Redis' own expiry
(``PX``/``PEXPIRE``) only collects keys that no longer matter.

Failure: short socket timeouts, no retries inside the client, every command bounded by
``anyio.fail_after``. A connection error or timeout raises ``StoreUnavailable`` and opens a small
circuit on the store: for ``fail_fast_ms`` (1 s) every call fails at once without touching the
network, then one call probes again. An outage is logged once when it starts and once when it ends.

Keys: ``<prefix><kind>:<key>`` with ``prefix = "interlock:"`` by default and kinds ``gcra``
(a string: the TAT), ``doc`` (a hash: ``v`` version, ``d`` JSON, ``c``/``ce`` a claim) and
``slots`` (a sorted set of holders scored by lease expiry). Each script touches one key, so Redis
Cluster works too.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.core.clock import Clock
from gateway.state import gcra
from gateway.state.base import GcraDecision, StoreUnavailable, Updater
from gateway.state.memory import check_slots, check_ttl, decode_doc, encode_doc

log = logging.getLogger("interlock.state")
T = TypeVar("T")

CAS_BUDGET_S = 1.0
CAS_ATTEMPTS = 1000
"""An update gives up after this long (real time) or this many tries, whichever comes first."""
CAS_BACKOFF_S = 0.0002
CAS_BACKOFF_CAP_S = 0.02
CLAIM_S = 1.0
"""How long a writer that keeps losing may hold off the others (wall-clock seconds)."""
OPTIONS = {"timeout_ms", "connect_timeout_ms", "max_connections", "prefix", "fail_fast_ms"}
"""Query parameters Interlock reads itself; any other is handed to redis-py as is."""

GCRA_LUA = """
-- KEYS[1]: the theoretical arrival time (TAT); ARGV: now, period_s, limit, burst, cost, eps_rel.
-- The same arithmetic as gateway/state/gcra.py decide(), in the same order of operations.
local now = tonumber(ARGV[1])
local emission = tonumber(ARGV[2]) / tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local capacity = emission * burst
local start = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if start < now then start = now end
if start > now + capacity then start = now + capacity end
local eps = tonumber(ARGV[6]) * math.max(math.abs(now), math.abs(start), 1.0)
local new_tat = start + emission * cost
if new_tat - now <= capacity + eps then
  if cost > 0 then
    local ttl_ms = math.max(1, math.ceil((new_tat - now) * 1000))
    redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl_ms)
  end
  return {1, '0', math.max(0, math.floor((capacity - (new_tat - now) + eps) / emission))}
end
local retry_after = new_tat - now - capacity
return {0, string.format('%.17g', retry_after),
        math.max(0, math.floor((capacity - (start - now) + eps) / emission))}
"""

CAS_LUA = """
-- KEYS[1]: a document hash {v = version, d = JSON, c = claim token, ce = claim expiry}.
-- ARGV: expected version ('' = absent), new JSON ('' = delete), ttl ms, token, now (wall-clock
-- epoch s), claim_s (> 0: on a conflict, claim the key for that long unless someone else has).
-- Answers {1} when written, else {0, version, JSON, 1 if claimed now else 0}.
local h = redis.call('HMGET', KEYS[1], 'v', 'd', 'c', 'ce')
local now = tonumber(ARGV[5])
local claim = h[3]
if claim and tonumber(h[4]) <= now then claim = false end
if (claim and claim ~= ARGV[4]) or (h[1] or '') ~= ARGV[1] then
  local claim_s = tonumber(ARGV[6])
  if claim or claim_s <= 0 then return {0, h[1], h[2], 0} end
  redis.call('HSET', KEYS[1], 'c', ARGV[4], 'ce', string.format('%.17g', now + claim_s))
  if redis.call('PTTL', KEYS[1]) < 0 then
    redis.call('PEXPIRE', KEYS[1], math.ceil(claim_s * 1000))
  end
  return {0, h[1], h[2], 1}
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'v', tostring((tonumber(h[1]) or 0) + 1), 'd', ARGV[2])
  if claim then redis.call('HDEL', KEYS[1], 'c', 'ce') end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return {1}
"""

UNCLAIM_LUA = """
-- KEYS[1]: a document hash; ARGV: token. Drops the claim if it is still this token's.
if redis.call('HGET', KEYS[1], 'c') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'c', 'ce')
end
return 1
"""

ACQUIRE_LUA = """
-- KEYS[1]: holders scored by lease expiry (wall-clock epoch s); ARGV: now, limit, lease_s, holder.
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[4]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%.17g', now + tonumber(ARGV[3])), ARGV[4])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((tonumber(last[2]) - now) * 1000)))
return 1
"""


class _Script:
    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode()).hexdigest()


_GCRA, _CAS, _UNCLAIM, _ACQUIRE = (_Script(b) for b in (GCRA_LUA, CAS_LUA, UNCLAIM_LUA, ACQUIRE_LUA))


def redact(url: str) -> str:
    """The URL for messages: no password, no query."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    if parts.username or parts.password:
        netloc = f"{parts.username or ''}{':***' if parts.password else ''}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _KeyLocks:
    """One lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (anyio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]


class RedisStateStore:
    """``redis://[user:password@]host:port/db`` or ``rediss://...``, with optional query parameters
    ``timeout_ms`` (250), ``connect_timeout_ms`` (250), ``max_connections`` (64), ``prefix``
    (``interlock:``) and ``fail_fast_ms`` (1000)."""

    name = "redis"

    def __init__(self, url: str, clock: Clock) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a Redis URL: {redact(url)!r} (expected redis:// or rediss://)")
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k in OPTIONS}
        self.url = redact(url)
        self._clock = clock
        self._timeout_s = _positive(ours, "timeout_ms", 250) / 1000
        self._connect_timeout_s = _positive(ours, "connect_timeout_ms", 250) / 1000
        self._fail_fast_s = _positive(ours, "fail_fast_ms", 1000) / 1000
        self._max_connections = int(_positive(ours, "max_connections", 64))
        self.prefix = ours.get("prefix", "interlock:")
        # A backstop only: the socket timeouts fire first; this also covers a NOSCRIPT reload.
        self._backstop_s = 2 * (self._connect_timeout_s + self._timeout_s)
        rest = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k not in OPTIONS])))
        self._pool = aioredis.ConnectionPool.from_url(
            rest,
            max_connections=self._max_connections,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._connect_timeout_s,
            retry=Retry(NoBackoff(), 0),  # a retry belongs to the guard's policy, not the hot path
            client_name="interlock",
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        # Callers wait here, bounded, rather than in the pool, which would raise at once when full.
        self._connections = anyio.Semaphore(self._max_connections, fast_acquire=True)
        self._key_locks = _KeyLocks()
        self._id = uuid.uuid4().hex[:12]
        self._tokens = itertools.count()
        self._down_since: float | None = None
        self._probe_at = 0.0

    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    # -- the circuit and the bounded call ------------------------------------------------------

    def _before_call(self) -> None:
        if self._down_since is None:
            return
        now = self._clock.monotonic()
        if now < self._probe_at:
            raise StoreUnavailable(
                f"state store {self.url} unreachable (failing fast for {self._probe_at - now:.2f} s more)"
            )
        self._probe_at = now + self._fail_fast_s  # this call probes; the others keep failing fast

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        now = self._clock.monotonic()
        self._probe_at = now + self._fail_fast_s
        reason = str(exc) or type(exc).__name__
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "state store %s unreachable; guards apply their on_store_error policy (%s)", self.url, reason
            )
        return StoreUnavailable(f"state store {self.url} unreachable: {reason}")

    def _answered(self) -> None:
        if self._down_since is not None:
            log.warning(
                "state store %s reachable again after %.1f s",
                self.url,
                self._clock.monotonic() - self._down_since,
            )
            self._down_since = None

    async def _call(self, command: Callable[..., Awaitable[T]], *args: Any) -> T:
        self._before_call()
        try:
            self._connections.acquire_nowait()
        except anyio.WouldBlock:
            await self._wait_for_a_connection()
        try:
            with anyio.fail_after(self._backstop_s):
                result = await command(*args)
        except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as exc:
            raise self._failed(exc) from exc
        except RedisError as exc:
            # Redis answered, so it is up; the command itself failed (a full memory, a key of the
            # wrong type): the guard's policy still decides.
            self._answered()
            raise StoreUnavailable(f"state store {self.url} refused the command: {exc}") from exc
        finally:
            self._connections.release()
        self._answered()
        return result

    async def _wait_for_a_connection(self) -> None:
        try:
            with anyio.fail_after(self._timeout_s):
                await self._connections.acquire()
        except TimeoutError:
            raise StoreUnavailable(
                f"state store {self.url}: all {self._max_connections} connections busy "
                f"for {self._timeout_s:.2f} s"
            ) from None

    async def _eval(self, script: _Script, key: str, *args: str | int) -> Any:
        try:
            return await self._redis.evalsha(script.sha, 1, key, *args)
        except NoScriptError:
            return await self._redis.eval(script.body, 1, key, *args)

    # -- the operations ------------------------------------------------------------------------

    async def gcra(
        self, key: str, *, period_s: float, limit: int, burst: int, now: float, cost: int = 1
    ) -> GcraDecision:
        gcra.check_params(period_s, limit, burst, cost)
        args = (repr(float(now)), repr(float(period_s)), limit, burst, cost, repr(gcra.EPS_REL))
        allowed, retry_after, remaining = await self._call(self._eval, _GCRA, self._key("gcra", key), *args)
        return GcraDecision(allowed == 1, float(retry_after), int(remaining))

    async def update(self, key: str, updater: Updater, *, ttl_s: float) -> Any:
        check_ttl(ttl_s)
        full = self._key("doc", key)
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        async with self._key_locks.hold(full):
            token = f"{self._id}:{next(self._tokens)}"
            version, raw = await self._call(
                lambda: cast("Awaitable[list[bytes | None]]", self._redis.hmget(full, ["v", "d"]))
            )
            claimed = False
            give_up_at = anyio.current_time() + CAS_BUDGET_S
            for attempt in range(CAS_ATTEMPTS):
                if attempt and not claimed and anyio.current_time() > give_up_at:
                    break
                try:
                    new, result = updater(decode_doc(raw))
                    encoded = encode_doc(new) or ""
                except Exception:
                    if claimed:
                        await self._call(self._eval, _UNCLAIM, full, token)
                    raise
                # From the second try on, a conflict also claims the key: while the claim lasts no
                # one else may write, so the next try wins. Versions still decide what is written;
                # a claim only orders the writers, so a starved replica gets its turn.
                claim_s = CLAIM_S if attempt else 0
                wall = repr(float(self._clock.wall()))
                args = ((version or b"").decode(), encoded, ttl_ms, token, wall, claim_s)
                reply = await self._call(self._eval, _CAS, full, *args)
                if reply[0] == 1:
                    return result
                version, raw, claimed = reply[1], reply[2], reply[3] == 1
                if attempt and not claimed:
                    # Someone else holds the claim: give them the round trip they need. Real time,
                    # as this waits for other writers, not for a policy's clock.
                    await anyio.sleep(random.uniform(0, min(CAS_BACKOFF_CAP_S, CAS_BACKOFF_S * 2**attempt)))
        raise StoreUnavailable(
            f"state store {self.url}: {key!r} kept changing under other writers; gave up after "
            f"{attempt} tries in {CAS_BUDGET_S:g} s"
        )

    async def get(self, key: str) -> dict[str, Any] | None:
        full = self._key("doc", key)
        raw = await self._call(lambda: cast("Awaitable[bytes | None]", self._redis.hget(full, "d")))
        return decode_doc(raw)

    async def acquire(self, key: str, *, limit: int, lease_s: float, holder: str) -> bool:
        check_slots(limit, lease_s)
        args = (repr(float(self._clock.wall())), limit, repr(float(lease_s)), holder)
        taken = await self._call(self._eval, _ACQUIRE, self._key("slots", key), *args)
        return bool(taken == 1)

    async def release(self, key: str, *, holder: str) -> None:
        full = self._key("slots", key)
        await self._call(self._redis.zrem, full, holder)

    async def close(self) -> None:
        with anyio.move_on_after(self._backstop_s, shield=True):
            await self._redis.aclose()
            await self._pool.aclose()


def _positive(options: dict[str, str], name: str, default: float) -> float:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"Redis URL option {name}={raw!r}: expected a positive number")
    return value
