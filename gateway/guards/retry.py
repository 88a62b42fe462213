"""Retry: repeat an idempotent call that failed for a reason that may pass, within a budget."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Protocol

from gateway.core import CallNext, Clock, ToolCall, ToolResult
from gateway.core.errors import GatewayError, UpstreamRateLimited, UpstreamTimeout, UpstreamUnavailable
from gateway.core.policy import RetrySettings

log = logging.getLogger("interlock.guards.retry")

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

    Keys on: ``policy.is_idempotent(call.annotations)``, ``policy.retry``, the error's class and
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
        if call.attempt == 1:
            self.budget.deposit(call.server, call.policy.retry.budget_ratio)
        settings = call.policy.retry
        if settings.max_attempts <= call.attempt or not call.policy.is_idempotent(call.annotations):
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
