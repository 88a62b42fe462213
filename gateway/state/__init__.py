"""Stores for what the gateway must remember: pins; counters, windows, leases and documents."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.state.base import GcraDecision, StateStore, StoreUnavailable, Updater
from gateway.state.factory import open_store
from gateway.state.memory import MemoryStateStore
from gateway.state.pins import MemoryPinStore, Pin, PinStore, StorePins
from gateway.state.sqlite import SqliteStateStore

if TYPE_CHECKING:
    from gateway.state.redis import RedisStateStore

__all__ = [
    "GcraDecision",
    "MemoryPinStore",
    "MemoryStateStore",
    "Pin",
    "PinStore",
    "RedisStateStore",
    "SqliteStateStore",
    "StateStore",
    "StorePins",
    "StoreUnavailable",
    "Updater",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # redis-py takes ~0.1 s to import: only those who use Redis pay for it.
    if name == "RedisStateStore":
        from gateway.state.redis import RedisStateStore

        return RedisStateStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
