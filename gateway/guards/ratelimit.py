"""Rate limits: GCRA limits per client, session, server and tool, held in the shared state store."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from urllib.parse import quote

from gateway.core import CallNext, Clock, ToolCall, ToolResult
from gateway.core.errors import RateLimited
from gateway.core.policy import RateLimit
from gateway.state.base import StateStore, StoreUnavailable

log = logging.getLogger("interlock.guards.ratelimit")

OnLimited = Callable[[str, str], None]
"""Called with (server, exposed tool name) on every ``rate_limited`` refusal: the metric
``interlock_rate_limited_total{server,tool}``."""

KEY_PARTS: tuple[str, ...] = ("client", "session", "server", "tool")
"""What a limit can count per, in the order they appear in a store key."""

STORE_DOWN_HINT = (
    "The gateway cannot check its limits right now (its state store is unreachable). Wait a few "
    "seconds and call again; the tool itself is not at fault."
)
STORE_DOWN_RETRY_S = 1.0


def ceil_ms(seconds: float) -> float:
    """A wait rounded up to whole milliseconds and never 0, so an agent that waits it is admitted.

    The microsecond of slack absorbs float noise on wall-clock timestamps (~1e-7 s at 1.7e9)."""
    return max(0.001, math.ceil(seconds * 1000.0 - 1e-3) / 1000.0)


def limit_key(limit: RateLimit, call: ToolCall) -> str:
    """``rl:{name}:client=alice:tool=crm__refund``: one GCRA state per value of the named parts."""
    values = _values(call)
    unknown = set(limit.key) - set(KEY_PARTS)
    if unknown:
        raise ValueError(f"rate limit {limit.name!r} keys on unknown parts {sorted(unknown)}")
    # ':' and '=' are quoted so that no client or session name can forge another key.
    parts = [f"{part}={quote(values[part], safe='/@._-~')}" for part in KEY_PARTS if part in limit.key]
    return ":".join([f"rl:{limit.name}", *parts])


def describe(limit: RateLimit, call: ToolCall) -> str:
    """``5 per 1s for client alice``: the limit as an agent and an operator read it."""
    values = _values(call)
    scope = ", ".join(f"{part} {values[part]}" for part in KEY_PARTS if part in limit.key)
    return f"{limit.limit} per {format_period(limit.period_s)}" + (f" for {scope}" if scope else "")


def _values(call: ToolCall) -> dict[str, str]:
    return {
        "client": call.caller.principal,
        "session": call.caller.session_key,
        "server": call.server,
        "tool": call.exposed_name,
    }


def format_period(period_s: float) -> str:
    if period_s >= 3600 and period_s % 3600 == 0:
        return f"{int(period_s // 3600)}h"
    if period_s >= 60 and period_s % 60 == 0:
        return f"{int(period_s // 60)}min"
    return f"{period_s:g}s"


class StoreDownLog:
    """Logs a fail-open store outage at most once a minute per guard, not once per call."""

    def __init__(self, clock: Clock, every_s: float = 60.0) -> None:
        self.clock = clock
        self.every_s = every_s
        self._last: float | None = None
        self.suppressed = 0

    def warn(self, what: str, exc: BaseException) -> None:
        now = self.clock.monotonic()
        if self._last is not None and now - self._last < self.every_s:
            self.suppressed += 1
            return
        log.warning(
            "state store unavailable, %s not enforced (fail-open): %s (%d similar suppressed)",
            what,
            exc,
            self.suppressed,
        )
        self._last = now
        self.suppressed = 0


def store_down_error(what: str, exc: BaseException, details: dict[str, object]) -> RateLimited:
    """The fail-closed refusal: retryable, with a short wait, saying it is the gateway's store."""
    return RateLimited(
        f"{what} could not be checked: the gateway's state store is unavailable ({exc})",
        hint=STORE_DOWN_HINT,
        retry_after_s=STORE_DOWN_RETRY_S,
        details={"reason": "state_store_unavailable", **details},
    )


class RateLimits:
    """Refuses a call that exceeds any of its policy's GCRA rate limits.

    Refuses: with ``rate_limited`` naming the limit ("5 per 1s for client alice"), ``retry_after_s``
    the store's exact wait rounded up to milliseconds (never 0), and ``details`` {limit, name,
    period_s, burst, key}. When the store is unavailable, ``policy.rate_limit_on_store_error``
    decides: ``open`` lets the call through (logged once a minute), ``closed`` refuses with
    ``details.reason = "state_store_unavailable"``.

    Keys on: each ``RateLimit`` in ``policy.rate_limits``, per the parts it names in ``key`` (client =
    principal, session = session key, server, tool = exposed name): ``rl:{name}:client=alice:...``.
    Each limit costs one ``gcra`` round trip, checked in order; all must admit. A later limit's
    refusal does not refund the earlier admissions (a refund would be a second round trip per limit
    and is racy across replicas): a refused call may spend up to one unit of the limits before it.
    Order limits from the strictest (most likely to refuse) to the loosest to keep that small.

    Time is the clock's wall time, so that replicas sharing Redis agree on one timeline.

    Position: after loop detection (a looping call is refused as a loop, not counted against the
    rate) and before argument validation, so invalid calls still spend the limit: an agent that
    hammers the gateway with garbage is throttled like any other.
    """

    def __init__(self, store: StateStore, clock: Clock, *, on_limited: OnLimited | None = None) -> None:
        self.store = store
        self.clock = clock
        self.on_limited = on_limited
        self._store_down = StoreDownLog(clock)

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        for limit in call.policy.rate_limits:
            await self._check(limit, call)
        return await call_next(call)

    async def _check(self, limit: RateLimit, call: ToolCall) -> None:
        key = limit_key(limit, call)
        details: dict[str, object] = {
            "limit": limit.limit,
            "name": limit.name,
            "period_s": limit.period_s,
            "burst": limit.burst,
            "key": key,
        }
        try:
            decision = await self.store.gcra(
                key, period_s=limit.period_s, limit=limit.limit, burst=limit.burst, now=self.clock.wall()
            )
        except StoreUnavailable as exc:
            if call.policy.rate_limit_on_store_error == "open":
                self._store_down.warn(f"rate limit {limit.name!r}", exc)
                return
            self._limited(call)
            raise store_down_error(f"rate limit {limit.name!r}", exc, details) from exc
        if decision.allowed:
            return
        self._limited(call)
        raise RateLimited(
            f"rate limit {limit.name!r} reached: {describe(limit, call)}",
            retry_after_s=ceil_ms(decision.retry_after_s),
            details=details,
        )

    def _limited(self, call: ToolCall) -> None:
        if self.on_limited is not None:
            self.on_limited(call.server, call.exposed_name)
