"""Concurrency: at most N calls in flight per upstream server, with a bounded wait for a slot."""

from __future__ import annotations

import logging
import random

import anyio

from gateway.core import CallNext, Clock, ToolCall, ToolResult
from gateway.core.errors import RateLimited
from gateway.core.policy import ConcurrencyLimit
from gateway.guards.ratelimit import OnLimited, StoreDownLog, store_down_error
from gateway.state.base import StateStore, StoreUnavailable

log = logging.getLogger("interlock.guards.concurrency")

BUSY_RETRY_AFTER_S = 1.0
"""The ``retry_after_s`` hint on a refusal: slots free as calls finish, which no one can predict."""


class Concurrency:
    """Holds each call to an upstream server to one of ``max_in_flight`` slots.

    Refuses: when no slot frees within ``max_queue_wait_s``, with ``rate_limited``,
    ``details.reason = "too_many_in_flight"`` and a small ``retry_after_s`` hint. While waiting it
    retries ``acquire`` with a short exponential backoff with jitter (``backoff_base_s`` doubling up
    to ``backoff_max_s``, each delay between half and all of that, never past the wait's end), on the
    injected clock. The slot is released when the call ends, however it ends (shielded from
    cancellation); a lease (``lease_s``, longer than any call may run) frees the slots of a gateway
    that died holding them. When the store is unavailable ``policy.rate_limit_on_store_error``
    decides: ``open`` lets the call through unlimited (logged once a minute), ``closed`` refuses.

    Keys on: ``policy.concurrency`` and the upstream server: ``conc:{server}``, the holder being the
    call's ``request_id``. Shared by every replica when the store is Redis.

    Position: innermost of the admission guards, right above the upstream (below retry, so each
    attempt takes and returns its own slot, and a call waiting for a human or a backoff holds none).
    """

    def __init__(
        self,
        store: StateStore,
        clock: Clock,
        *,
        lease_s: float = 300.0,
        backoff_base_s: float = 0.01,
        backoff_max_s: float = 0.25,
        rng: random.Random | None = None,
        on_limited: OnLimited | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease_s = lease_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.rng = rng or random.Random()
        self.on_limited = on_limited
        self._store_down = StoreDownLog(clock)

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        limit = call.policy.concurrency
        if limit is None:
            return await call_next(call)
        key = f"conc:{call.server}"
        try:
            holding = await self._wait_for_slot(key, limit, call)
        except RateLimited:
            raise  # refused: the store granted nothing
        except BaseException:
            # Cancelled while asking: the store may have granted a slot that no one would use.
            await self._release(key, call.request_id)
            raise
        try:
            return await call_next(call)
        finally:
            if holding:
                await self._release(key, call.request_id)

    async def _wait_for_slot(self, key: str, limit: ConcurrencyLimit, call: ToolCall) -> bool:
        """True once a slot is held; False when the store is down and the policy fails open."""
        deadline = self.clock.monotonic() + limit.max_queue_wait_s
        lease = self._lease_s(call)
        waited = 0
        while True:
            try:
                acquired = await self.store.acquire(
                    key, limit=limit.max_in_flight, lease_s=lease, holder=call.request_id
                )
            except StoreUnavailable as exc:
                if call.policy.rate_limit_on_store_error == "open":
                    self._store_down.warn(f"concurrency limit of {call.server}", exc)
                    return False
                self._limited(call)
                raise store_down_error(
                    f"concurrency limit of {call.server}", exc, {"max_in_flight": limit.max_in_flight}
                ) from exc
            if acquired:
                return True
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                self._limited(call)
                raise RateLimited(
                    f"{call.server} already has {limit.max_in_flight} calls in flight and none finished "
                    f"within {limit.max_queue_wait_s:g}s",
                    retry_after_s=BUSY_RETRY_AFTER_S,
                    details={
                        "reason": "too_many_in_flight",
                        "max_in_flight": limit.max_in_flight,
                        "max_queue_wait_s": limit.max_queue_wait_s,
                    },
                )
            await self.clock.sleep(min(remaining, self._backoff(waited)))
            waited += 1

    def _backoff(self, waited: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2**waited)
        return self.rng.uniform(ceiling / 2, ceiling)

    def _lease_s(self, call: ToolCall) -> float:
        # A lease must outlive the call, or a slow call's slot would be handed to another.
        timeout = call.policy.timeout_s
        return self.lease_s if timeout is None else max(self.lease_s, 2 * timeout)

    async def _release(self, key: str, holder: str) -> None:
        # Shielded: a cancelled call must still give its slot back, or the slot leaks until the lease.
        with anyio.CancelScope(shield=True):
            try:
                await self.store.release(key, holder=holder)
            except StoreUnavailable as exc:
                log.warning("could not release %s for %s (the lease will free it): %s", key, holder, exc)

    def _limited(self, call: ToolCall) -> None:
        if self.on_limited is not None:
            self.on_limited(call.server, call.exposed_name)
