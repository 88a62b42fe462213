"""Concurrency: at most N calls in flight per upstream server, with a bounded wait for a slot."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import anyio

from gateway.config.policy_models import PositiveInt, Wait
from gateway.config.units import ExplainView, Key, PolicyTable, Rows, Unit, fields_text
from gateway.core import CallNext, Clock, ToolCall, ToolResult
from gateway.core.errors import RateLimited, StateUnavailable
from gateway.guards.outage import StoreDownLog, store_down_error
from gateway.guards.ratelimit import RATE_LIMITS
from gateway.guards.stage import GuardDeps, Stage
from gateway.guards.timeout import TIMEOUT
from gateway.state.base import StateStore, StoreUnavailable

log = logging.getLogger("interlock.guards.concurrency")

BUSY_RETRY_AFTER_S = 1.0
"""The ``retry_after_s`` hint on a refusal: slots free as calls finish, which no one can predict."""


@dataclass(frozen=True, slots=True)
class ConcurrencyLimit:
    max_in_flight: int
    max_queue_wait_s: float = 5.0


class ConcurrencyTable(PolicyTable):
    """Calls in flight at once per upstream server; always replaced whole by a later rule."""

    max_in_flight: PositiveInt
    max_queue_wait_s: Wait | None = None
    """How long a call may wait for a slot before it is refused; default 5, 0 refuses at once."""


def _limit(table: ConcurrencyTable, rule: str | None) -> ConcurrencyLimit:
    if table.max_queue_wait_s is None:
        return ConcurrencyLimit(table.max_in_flight)
    return ConcurrencyLimit(table.max_in_flight, table.max_queue_wait_s)


def _rows(limit: ConcurrencyLimit | None, view: ExplainView) -> Rows:
    shown = "no limit" if limit is None else f"{fields_text(limit)} (for all of server {view.server!r})"
    return [("concurrency", shown)]


CONCURRENCY: Unit[ConcurrencyLimit | None] = Unit(
    name="concurrency",
    default=None,
    keys={
        "concurrency": Key(
            ConcurrencyTable,
            "Calls in flight at once per upstream server, whichever tool the rule matches (replaced whole).",
            convert=_limit,
        )
    },
    build=lambda values: values["concurrency"],
    rows=_rows,
)


class Concurrency:
    """Holds each call to an upstream server to one of ``max_in_flight`` slots.

    Refuses: when no slot frees within ``max_queue_wait_s``, with ``rate_limited``,
    ``details.reason = "too_many_in_flight"`` and a small ``retry_after_s`` hint. While waiting it
    retries ``acquire`` with a short exponential backoff with jitter (``backoff_base_s`` doubling up
    to ``backoff_max_s``, each delay between half and all of that, never past the wait's end), on the
    injected clock. The slot is released when the call ends, however it ends (shielded from
    cancellation); a lease (``lease_s``, longer than any call may run) frees the slots of a gateway
    that died holding them. When the store is unavailable ``rate_limit_on_store_error`` decides:
    ``open`` lets the call through unlimited (logged once a minute), ``closed`` refuses with
    ``state_unavailable``.

    Keys on: the policy's ``concurrency`` and the upstream server: ``conc:{server}``, the holder being the
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
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease_s = lease_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.rng = rng or random.Random()
        self._store_down = StoreDownLog(clock)

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        limit = call.policy.of(CONCURRENCY)
        if limit is None:
            return await call_next(call)
        key = f"conc:{call.server}"
        try:
            holding = await self._wait_for_slot(key, limit, call)
        except (RateLimited, StateUnavailable):
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
                if call.policy.of(RATE_LIMITS).on_store_error == "open":
                    self._store_down.warn(f"concurrency limit of {call.server}", exc)
                    return False
                raise store_down_error(
                    f"concurrency limit of {call.server}", exc, {"max_in_flight": limit.max_in_flight}
                ) from exc
            if acquired:
                return True
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
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
        timeout = call.policy.of(TIMEOUT).timeout_s
        return self.lease_s if timeout is None else max(self.lease_s, 2 * timeout)

    async def _release(self, key: str, holder: str) -> None:
        # Shielded: a cancelled call must still give its slot back, or the slot leaks until the lease.
        with anyio.CancelScope(shield=True):
            try:
                await self.store.release(key, holder=holder)
            except StoreUnavailable as exc:
                log.warning("could not release %s for %s (the lease will free it): %s", key, holder, exc)


def _build(deps: GuardDeps) -> Concurrency:
    return Concurrency(deps.store, deps.clock)


STAGE = Stage("concurrency", _build, CONCURRENCY)
