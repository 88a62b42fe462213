"""The small interface every state store implements: memory, SQLite and Redis.

Guards never talk to a database. They ask for one atomic decision at a time, so a Redis store can
answer each with one round trip (a Lua script) and N gateways behind a load balancer behave as one.
A store that cannot answer raises ``StoreUnavailable`` quickly (short timeouts, never a hang); the
guard's policy then says whether the call goes on (fail-open) or is refused (fail-closed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class StoreUnavailable(Exception):
    """The store did not answer in time or refused the connection."""


@dataclass(frozen=True, slots=True)
class GcraDecision:
    allowed: bool
    retry_after_s: float
    """0 when allowed; otherwise the exact wait until this call would be admitted."""
    remaining: int
    """Calls still admissible right now (the burst left)."""


Updater = Callable[[dict[str, Any] | None], tuple[dict[str, Any] | None, Any]]
"""A pure function: the current value (None if absent) -> (the new value or None to delete, a
result for the caller). It may run more than once under contention: it must not have side effects."""


class StateStore(Protocol):
    name: str
    """"memory", "sqlite" or "redis", for metrics and logs."""

    async def gcra(
        self, key: str, *, period_s: float, limit: int, burst: int, now: float, cost: int = 1
    ) -> GcraDecision:
        """Admit or refuse one call under a GCRA limit of ``limit`` per ``period_s`` with ``burst``."""
        ...

    async def update(self, key: str, updater: Updater, *, ttl_s: float) -> Any:
        """Atomically read-modify-write one JSON document; returns the updater's result."""
        ...

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def acquire(self, key: str, *, limit: int, lease_s: float, holder: str) -> bool:
        """Take one of ``limit`` slots (a concurrency limit); a lease expires if its holder dies."""
        ...

    async def release(self, key: str, *, holder: str) -> None: ...

    async def close(self) -> None: ...
