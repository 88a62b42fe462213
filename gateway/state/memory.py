"""The in-process state store: the default for counters, and the reference semantics for the others.

Everything lives in one bounded dict (least recently used entries go first when it is full) and
expires lazily when touched. Nothing survives a restart and nothing is shared between processes:
with several gateway replicas, each enforces its own limits (use ``redis://`` to share them).

The small helpers every store shares (argument checks, the JSON codec of documents) live here too,
next to the semantics they define.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any

import anyio
import orjson

from gateway.core.clock import Clock
from gateway.state import gcra
from gateway.state.base import GcraDecision, Updater

DEFAULT_MAX_KEYS = 100_000


def check_ttl(ttl_s: float) -> None:
    if not (ttl_s > 0 and math.isfinite(ttl_s)):
        raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")


def check_slots(limit: int, lease_s: float) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    if not (lease_s > 0 and math.isfinite(lease_s)):
        raise ValueError(f"lease_s must be a positive number of seconds, got {lease_s!r}")


def encode_doc(doc: dict[str, Any] | None) -> str | None:
    """A document as stored (compact JSON), or None for "delete"; anything else is the updater's bug."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise TypeError(f"an updater must return a dict or None as the new value, got {type(doc).__name__}")
    # orjson: every guard decision encodes and decodes its document (a loop history is ~3 KB), and
    # the C codec does the round trip in a sixth of the time of the json module. JSON has no
    # spelling for NaN or infinity: orjson writes them as null, and no updater of ours makes them.
    try:
        return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError: e.g. a lone surrogate, which UTF-8 cannot hold
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)  # ASCII, escapes it


def decode_doc(raw: str | bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:  # what encode_doc's fallback wrote (escaped lone surrogates)
        doc = json.loads(raw)
    assert isinstance(doc, dict)
    return doc


class _Entry:
    __slots__ = ("expires", "value")

    def __init__(self, value: Any, expires: float) -> None:
        self.value = value
        self.expires = expires


class MemoryStateStore:
    """A dict behind an anyio lock. TTLs and leases run on ``clock.monotonic()``."""

    name = "memory"

    def __init__(self, clock: Clock, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        self._clock = clock
        self._max_keys = max_keys
        # Every operation is synchronous inside the lock; the lock keeps it so if one ever awaits.
        self._lock = anyio.Lock(fast_acquire=True)
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _load(self, kind: str, key: str) -> Any:
        entry = self._entries.get((kind, key))
        if entry is None:
            return None
        if entry.expires <= self._clock.monotonic():
            del self._entries[(kind, key)]
            return None
        self._entries.move_to_end((kind, key))
        return entry.value

    def _store(self, kind: str, key: str, value: Any, ttl_s: float) -> None:
        self._entries[(kind, key)] = _Entry(value, self._clock.monotonic() + ttl_s)
        self._entries.move_to_end((kind, key))
        while len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)  # the least recently used (expired ones tend to be here)

    def _drop(self, kind: str, key: str) -> None:
        self._entries.pop((kind, key), None)

    async def gcra(
        self, key: str, *, period_s: float, limit: int, burst: int, now: float, cost: int = 1
    ) -> GcraDecision:
        gcra.check_params(period_s, limit, burst, cost)
        async with self._lock:
            tat = self._load("gcra", key)
            decision, new_tat = gcra.decide(
                tat, now=now, period_s=period_s, limit=limit, burst=burst, cost=cost
            )
            if new_tat is not None:
                self._store("gcra", key, new_tat, gcra.expiry_s(new_tat, now))
            return decision

    async def update(self, key: str, updater: Updater, *, ttl_s: float) -> Any:
        check_ttl(ttl_s)
        async with self._lock:
            # A fresh copy for the updater: it may mutate its argument without touching the store.
            new, result = updater(decode_doc(self._load("doc", key)))
            encoded = encode_doc(new)
            if encoded is None:
                self._drop("doc", key)
            else:
                self._store("doc", key, encoded, ttl_s)
            return result

    async def get(self, key: str) -> dict[str, Any] | None:
        async with self._lock:
            return decode_doc(self._load("doc", key))

    async def acquire(self, key: str, *, limit: int, lease_s: float, holder: str) -> bool:
        check_slots(limit, lease_s)
        async with self._lock:
            now = self._clock.monotonic()
            holders: dict[str, float] = {
                h: until for h, until in (self._load("slots", key) or {}).items() if until > now
            }
            if holder not in holders and len(holders) >= limit:
                self._store_slots(key, holders, now)
                return False
            holders[holder] = now + lease_s  # a holder acquiring again renews its lease
            self._store_slots(key, holders, now)
            return True

    async def release(self, key: str, *, holder: str) -> None:
        async with self._lock:
            holders: dict[str, float] | None = self._load("slots", key)
            if holders is None:
                return
            holders.pop(holder, None)
            self._store_slots(key, holders, self._clock.monotonic())

    def _store_slots(self, key: str, holders: dict[str, float], now: float) -> None:
        if holders:
            self._store("slots", key, holders, max(holders.values()) - now)
        else:
            self._drop("slots", key)

    async def close(self) -> None:
        self._entries.clear()
