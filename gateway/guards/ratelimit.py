"""Rate limits: GCRA limits per client, session, server and tool, held in the shared state store."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self
from urllib.parse import quote

from pydantic import AfterValidator, Field, model_validator

from gateway.config.models import Loc, Seconds, problems_error
from gateway.config.policy_models import PositiveInt, RuleName
from gateway.config.units import ExplainView, Key, PolicyTable, Rows, Unit, by_name, fields_text
from gateway.core import CallNext, Clock, ToolCall, ToolResult
from gateway.core.errors import RateLimited
from gateway.core.policy import StoreFailure
from gateway.guards.outage import StoreDownLog, ceil_ms, store_down_error
from gateway.guards.stage import GuardDeps, Stage
from gateway.state.base import StateStore, StoreUnavailable

log = logging.getLogger("interlock.guards.ratelimit")

KEY_PARTS: tuple[str, ...] = ("client", "session", "server", "tool")
"""What a limit can count per, in the order they appear in a store key."""
KeyPart = Literal["client", "session", "server", "tool"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A GCRA limit: ``limit`` calls per ``period_s``, with ``burst`` calls allowed at once."""

    name: str
    limit: int
    period_s: float
    burst: int = 1
    key: tuple[str, ...] = ("client",)
    """What the limit counts per: any of client, session, server, tool."""


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    limits: tuple[RateLimit, ...] = ()
    on_store_error: StoreFailure = "open"
    """Also decides for the concurrency limit (``rate_limit_on_store_error``)."""


class RateLimitTable(PolicyTable):
    """One limit: ``limit`` calls per ``period_s`` (GCRA), counted per ``key``."""

    name: RuleName
    """Unique in a table; a later rule's limit of the same name replaces the earlier one."""
    limit: PositiveInt
    period_s: Seconds
    burst: PositiveInt | None = None
    """Calls admitted at once; default 1 (calls evenly spaced, one per ``period_s / limit``)."""
    key: Annotated[list[KeyPart], Field(min_length=1, json_schema_extra={"uniqueItems": True})] | None = None
    """What the limit counts per: any of client, session, server, tool; default ``["client"]``."""

    @model_validator(mode="after")
    def _unique_key(self) -> Self:
        parts = self.key or []
        problems: list[tuple[Loc, str]] = [
            (("key", index), f"{part!r} is already listed (key[{parts.index(part)}])")
            for index, part in enumerate(parts)
            if parts.index(part) != index
        ]
        if problems:
            raise problems_error(problems)
        return self


def _unique_names(tables: list[RateLimitTable]) -> list[RateLimitTable]:
    first: dict[str, int] = {}
    problems: list[tuple[Loc, str]] = []
    for index, table in enumerate(tables):
        if table.name in first:
            message = f"duplicate rate limit name {table.name!r} (first in rate_limits[{first[table.name]}])"
            problems.append(((index, "name"), message))
        first.setdefault(table.name, index)
    if problems:
        raise problems_error(problems)
    return tables


def _limit(table: RateLimitTable) -> RateLimit:
    # Keys left out keep the dataclass's defaults (burst 1, per client).
    default = RateLimit(table.name, table.limit, table.period_s)
    burst = default.burst if table.burst is None else table.burst
    key = default.key if table.key is None else tuple(table.key)
    return RateLimit(table.name, table.limit, table.period_s, burst, key)


def _settings(values: Mapping[str, Any]) -> RateLimitSettings:
    default = RateLimitSettings()
    return RateLimitSettings(
        values.get("rate_limits", default.limits),
        values.get("rate_limit_on_store_error", default.on_store_error),
    )


def _rows(settings: RateLimitSettings, view: ExplainView) -> Rows:
    rows = [(f"rate_limits.{limit.name}", fields_text(limit, ("name",))) for limit in settings.limits]
    return (rows or [("rate_limits", "none")]) + [("rate_limit_on_store_error", settings.on_store_error)]


def _convert(tables: Sequence[RateLimitTable], rule: str | None) -> tuple[RateLimit, ...]:
    return tuple(_limit(table) for table in tables)


RATE_LIMITS: Unit[RateLimitSettings] = Unit(
    name="rate_limits",
    default=RateLimitSettings(),
    keys={
        "rate_limits": Key(
            Annotated[list[RateLimitTable], AfterValidator(_unique_names)],
            "GCRA limits (accumulate by name: a later limit of the same name replaces the earlier).",
            combine=by_name("name"),
            convert=_convert,
        ),
        "rate_limit_on_store_error": Key(
            StoreFailure, "Rate and concurrency limits while the state store is down: open or closed."
        ),
    },
    build=_settings,
    rows=_rows,
)


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


class RateLimits:
    """Refuses a call that exceeds any of its policy's GCRA rate limits.

    Refuses: with ``rate_limited`` naming the limit ("5 per 1s for client alice"), ``retry_after_s``
    the store's exact wait rounded up to milliseconds (never 0), and ``details`` {limit, name,
    period_s, burst, key}. When the store is unavailable, ``rate_limit_on_store_error`` decides:
    ``open`` lets the call through (logged once a minute), ``closed`` refuses with
    ``state_unavailable``.

    Keys on: each ``RateLimit`` of the policy's ``rate_limits``, per the parts it names in ``key`` (client =
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

    def __init__(self, store: StateStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._store_down = StoreDownLog(clock)

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        settings = call.policy.of(RATE_LIMITS)
        for limit in settings.limits:
            await self._check(limit, call, settings)
        return await call_next(call)

    async def _check(self, limit: RateLimit, call: ToolCall, settings: RateLimitSettings) -> None:
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
            if settings.on_store_error == "open":
                self._store_down.warn(f"rate limit {limit.name!r}", exc)
                return
            raise store_down_error(f"rate limit {limit.name!r}", exc, details) from exc
        if decision.allowed:
            return
        raise RateLimited(
            f"rate limit {limit.name!r} reached: {describe(limit, call)}",
            retry_after_s=ceil_ms(decision.retry_after_s),
            details=details,
        )


def _build(deps: GuardDeps) -> RateLimits:
    return RateLimits(deps.store, deps.clock)


STAGE = Stage("rate_limits", _build, RATE_LIMITS)
