"""GCRA, the arithmetic only: shared by the memory and SQLite stores, mirrored line for line in Lua.

The generic cell rate algorithm keeps one number per key, the *theoretical arrival time* ``TAT``:
the moment at which the key would be back to a full burst had calls arrived at exactly the
permitted rate. With a limit of ``limit`` calls per ``period_s`` and a burst of ``burst``:

- emission interval ``T = period_s / limit`` (the steady spacing between calls);
- tolerance ``tau = T * (burst - 1)`` (how far ahead of ``now`` the TAT may run);
- ``tat = max(TAT, now)`` (an idle key does not bank credit beyond a full burst);
- a call of cost ``c`` is admitted if ``tat - now <= tau + T - T*c``, which for ``c = 1`` is the
  textbook ``TAT - now <= tau``; in words: ``new_tat - now <= T * burst`` with
  ``new_tat = tat + T*c``;
- if admitted, ``TAT := new_tat``; a refused call leaves ``TAT`` as it was (refusals cost nothing);
- a refused call's ``retry_after_s = new_tat - now - T*burst = tat + T*c - now - tau - T``: the
  exact wait after which the same call is admitted (``T`` after a full burst is spent). It is
  ``> 0`` whenever a call is refused;
- ``remaining`` is the number of cost-1 calls still admissible at ``now`` after this decision:
  ``floor((T*burst - (TAT - now)) / T)`` with the TAT after the decision, clamped at ``>= 0``
  (``burst - 1`` after the first call of a fresh key, ``0`` after the burst's last one).

Clocks: with one clock ``TAT - now <= T * burst`` always holds. A TAT further ahead can only come
from a clock that stepped back (an NTP step, a reboot under a monotonic clock, a replica running
behind the one that wrote); it is clamped to ``now + T * burst``, so such a key waits at most one
full burst's time instead of the size of the step.

The state expires ``TAT - now`` seconds after the last admitted call: by then the key is
indistinguishable from a fresh one, so stores may drop it.

Times are floats of seconds. ``now`` comes from the caller's clock: a shared store (Redis) needs a
clock every replica agrees on, i.e. wall-clock epoch seconds. Rounding: comparisons allow a slack
of ``EPS_REL * max(|now|, |tat|, 1)`` (64 ulps of the larger time), so a call arriving exactly on
the emission schedule is admitted even if float sums differ by the last bit; at epoch times
(1.7e9 s) that slack is about 24 microseconds, at monotonic times it is picoseconds.

``cost = 0`` is a peek: it is always admitted, changes nothing and reports ``remaining``.
"""

from __future__ import annotations

import math

from gateway.state.base import GcraDecision

EPS_REL = 2.0**-46
"""Relative slack for rounding (the Lua script uses the same constant)."""


def check_params(period_s: float, limit: int, burst: int, cost: int) -> None:
    """Reject a limit that cannot mean anything; a caller bug, so a ValueError, not a refusal."""
    if not (period_s > 0 and math.isfinite(period_s)):
        raise ValueError(f"period_s must be a positive number of seconds, got {period_s!r}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, got {burst!r}")
    if not 0 <= cost <= burst:
        raise ValueError(f"cost must be between 0 and the burst ({burst}), got {cost!r}")


def decide(
    tat: float | None, *, now: float, period_s: float, limit: int, burst: int, cost: int = 1
) -> tuple[GcraDecision, float | None]:
    """One GCRA decision: (the decision, the TAT to store or None to leave the stored one as is)."""
    emission = period_s / limit
    capacity = emission * burst
    start = now if tat is None or tat < now else tat
    if start > now + capacity:  # only if a clock stepped back: never wait longer than a full burst
        start = now + capacity
    eps = EPS_REL * max(abs(now), abs(start), 1.0)
    new_tat = start + emission * cost
    if new_tat - now <= capacity + eps:
        remaining = max(0, math.floor((capacity - (new_tat - now) + eps) / emission))
        return GcraDecision(True, 0.0, remaining), (new_tat if cost > 0 else None)
    retry_after = new_tat - now - capacity
    remaining = max(0, math.floor((capacity - (start - now) + eps) / emission))
    return GcraDecision(False, retry_after, remaining), None


def expiry_s(tat: float, now: float) -> float:
    """How long a stored TAT still matters: after ``tat - now`` seconds the key is as good as new."""
    return max(tat - now, 0.0)
