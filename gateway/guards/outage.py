"""What a guard does when the state store is unreachable: one log line a minute when it lets
calls through, and one refusal when its policy fails closed (``state_unavailable``)."""

from __future__ import annotations

import logging
import math

from gateway.core import Clock
from gateway.core.errors import StateUnavailable

log = logging.getLogger("interlock.guards")

STORE_DOWN_RETRY_S = 1.0


def ceil_ms(seconds: float) -> float:
    """A wait rounded up to whole milliseconds and never 0, so an agent that waits it is admitted.

    The microsecond of slack absorbs float noise on wall-clock timestamps (~1e-7 s at 1.7e9)."""
    return max(0.001, math.ceil(seconds * 1000.0 - 1e-3) / 1000.0)


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


def store_down_error(
    what: str, exc: BaseException, details: dict[str, object] | None = None
) -> StateUnavailable:
    """The fail-closed refusal: retryable, with a short wait, saying it is the gateway's store."""
    return StateUnavailable(
        f"{what} could not be checked: the gateway's state store is unavailable ({exc})",
        retry_after_s=STORE_DOWN_RETRY_S,
        details=dict(details or {}),
    )
