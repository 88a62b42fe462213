"""Retry: repeat an idempotent call that failed for a reason that may pass, within a budget."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Protocol, Self

from pydantic import Field, model_validator

from gateway.config.models import NOT_BOOL_FLOAT, NOT_BOOL_INT, Seconds, problems_error
from gateway.config.units import ExplainView, Key, PolicyTable, Rows, Unit, merged
from gateway.core import CallNext, Clock, ToolCall, ToolResult
from gateway.core.errors import GatewayError, UpstreamRateLimited, UpstreamTimeout, UpstreamUnavailable
from gateway.guards.stage import GuardDeps, Stage
from gateway.guards.traits import TRAITS

log = logging.getLogger("interlock.guards.retry")


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_attempts: int = 3
    """Attempts in all, the first included; 1 disables retries."""
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    max_retry_after_s: float = 30.0
    """An upstream's Retry-After is honoured up to this; longer waits are the agent's to take."""
    budget_ratio: float = 0.2
    """Retries per upstream may add at most this fraction of its recent calls (plus a small floor)."""


class RetryTable(PolicyTable):
    """Retry settings; a rule's table overrides only the keys it sets."""

    max_attempts: Annotated[int, Field(ge=1, le=20), NOT_BOOL_INT] | None = None
    base_delay_s: Seconds | None = None
    max_delay_s: Seconds | None = None
    max_retry_after_s: Annotated[float, Field(ge=0, allow_inf_nan=False), NOT_BOOL_FLOAT] | None = None
    budget_ratio: Annotated[float, Field(ge=0, le=1), NOT_BOOL_FLOAT] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        base, ceiling = self.base_delay_s, self.max_delay_s
        if base is not None and ceiling is not None and ceiling < base:
            raise problems_error([(("max_delay_s",), f"must be >= base_delay_s ({self.base_delay_s:g})")])
        return self


def _settings(values: Mapping[str, Any]) -> RetrySettings:
    return replace(RetrySettings(), **values["retry"])


def _rows(settings: RetrySettings, view: ExplainView) -> Rows:
    idempotent = view.policy.of(TRAITS).is_idempotent(view.annotations)
    shown = (
        f"max_attempts={settings.max_attempts} base_delay_s={settings.base_delay_s:g} "
        f"max_delay_s={settings.max_delay_s:g} max_retry_after_s={settings.max_retry_after_s:g} "
        f"budget_ratio={settings.budget_ratio:g}"
    )
    return [("retry", shown + ("" if idempotent else " (not used: not idempotent)"))]


RETRY: Unit[RetrySettings] = Unit(
    name="retry",
    default=RetrySettings(),
    keys={"retry": Key(RetryTable, "Retries of idempotent tools (merged key by key).", combine=merged)},
    build=_settings,
    rows=_rows,
)

RETRIED: tuple[type[GatewayError], ...] = (UpstreamRateLimited, UpstreamUnavailable, UpstreamTimeout)
"""Failures of the upstream that may pass by themselves. ``rate_limited`` is the gateway's own limit
(retrying would only spend it again), ``outcome_unknown`` may have taken effect, and everything else
will fail the same way again."""


class RetryBudget(Protocol):
    """Retries allowed per upstream server, so retries cannot multiply load during an outage."""

    def deposit(self, server: str, ratio: float) -> None:
        """A first attempt to ``server`` earns ``ratio`` of a retry."""

    def try_spend(self, server: str) -> bool:
        """Take one retry for ``server``; ``False`` when the budget is empty."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    refilled_at: float


class MemoryRetryBudget:
    """A token bucket per server, in this process.

    Each first attempt deposits ``ratio`` tokens (the policy's ``retry.budget_ratio``) and each retry
    spends one, so retries add at most that fraction to a server's load. Tokens also accrue at
    ``floor_per_s`` so a quiet server can still retry; the bucket holds at most ``cap`` tokens and
    starts full (a server nobody called recently has had time to refill).
    """

    def __init__(self, clock: Clock, *, cap: float = 10.0, floor_per_s: float = 1.0) -> None:
        self.clock = clock
        self.cap = cap
        self.floor_per_s = floor_per_s
        self._buckets: dict[str, _Bucket] = {}

    def tokens(self, server: str) -> float:
        return self._refill(server).tokens

    def deposit(self, server: str, ratio: float) -> None:
        bucket = self._refill(server)
        bucket.tokens = min(self.cap, bucket.tokens + ratio)

    def try_spend(self, server: str) -> bool:
        bucket = self._refill(server)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _refill(self, server: str) -> _Bucket:
        now = self.clock.monotonic()
        bucket = self._buckets.get(server)
        if bucket is None:
            bucket = self._buckets[server] = _Bucket(self.cap, now)
        elapsed = max(0.0, now - bucket.refilled_at)
        bucket.tokens = min(self.cap, bucket.tokens + elapsed * self.floor_per_s)
        bucket.refilled_at = now
        return bucket


class Retry:
    """Retries idempotent calls that failed with a passing upstream failure.

    Changes: on ``upstream_rate_limited``, ``upstream_unavailable`` or ``upstream_timeout`` the call is
    sent again as ``call.with_changes(attempt=n)``, up to ``retry.max_attempts`` attempts in all, after
    an exponential backoff with full jitter: ``uniform(0, min(max_delay_s, base_delay_s * 2**(n-1)))``,
    or the upstream's ``retry_after_s`` when that is longer. Gives up and lets the last error through
    (with ``details.attempts``) when the attempts are spent; when ``retry_after_s`` exceeds
    ``retry.max_retry_after_s`` (the wait is the agent's to take, ``details.retry_skipped``); when the
    wait would pass the call's deadline; or when the server's retry budget is empty
    (``details.retry_budget_exhausted``). Never retries refusals, ``outcome_unknown``, results, or
    any call the policy does not mark idempotent.

    Keys on: whether the tool is idempotent (``traits``), the ``retry`` settings, the error's class and
    ``retry_after_s``, and the upstream server (for the budget: every first attempt, idempotent or
    not, deposits ``retry.budget_ratio``, because every call is load on that server).

    Position: below argument validation and approval (an invalid or unapproved call is never sent
    twice, and a human approves once, not per attempt); above the circuit breaker and the timeout, so
    each attempt gets its own time limit and an open breaker stops retries at once.
    """

    def __init__(self, clock: Clock, budget: RetryBudget, *, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.budget = budget
        self.rng = rng or random.Random()

    async def __call__(self, call: ToolCall, call_next: CallNext) -> ToolResult:
        settings = call.policy.of(RETRY)
        if call.attempt == 1:
            self.budget.deposit(call.server, settings.budget_ratio)
        if settings.max_attempts <= call.attempt or not call.policy.of(TRAITS).is_idempotent(
            call.annotations
        ):
            return await call_next(call)
        attempt = call
        while True:
            try:
                return await call_next(attempt)
            except RETRIED as exc:
                delay = self._delay_or_give_up(attempt, settings, exc)
                if delay is None:
                    raise
                log.info(
                    "retrying %s.%s [%s] attempt %d in %.3fs after %s",
                    call.server,
                    call.tool,
                    call.request_id,
                    attempt.attempt + 1,
                    delay,
                    exc.code,
                )
                await self.clock.sleep(delay)
                attempt = call.with_changes(attempt=attempt.attempt + 1)

    def backoff(self, failed_attempt: int, settings: RetrySettings) -> float:
        """Full jitter: anywhere between no wait and the exponential ceiling."""
        ceiling = min(settings.max_delay_s, settings.base_delay_s * 2 ** (failed_attempt - 1))
        return self.rng.uniform(0.0, ceiling)

    def _delay_or_give_up(self, call: ToolCall, settings: RetrySettings, exc: GatewayError) -> float | None:
        """The wait before the next attempt, or ``None`` (with the reason in the error's details)."""
        exc.details["attempts"] = call.attempt
        if not exc.retryable or call.attempt >= settings.max_attempts:
            return None
        delay = self.backoff(call.attempt, settings)
        if exc.retry_after_s is not None:
            if exc.retry_after_s > settings.max_retry_after_s:
                exc.details["retry_skipped"] = "retry_after_above_cap"
                return None
            delay = max(delay, exc.retry_after_s)
        if call.deadline is not None and self.clock.monotonic() + delay >= call.deadline:
            exc.details["retry_skipped"] = "deadline"
            return None
        if not self.budget.try_spend(call.server):
            exc.details["retry_budget_exhausted"] = True
            return None
        return delay


def _build(deps: GuardDeps) -> Retry:
    return Retry(deps.clock, deps.budget or MemoryRetryBudget(deps.clock))


STAGE = Stage("retry", _build, RETRY)
