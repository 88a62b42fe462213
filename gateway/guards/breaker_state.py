"""The circuit breaker's state machine: pure functions over one JSON document.

Every function here takes the stored document (or ``None``) and returns ``(new document, result)``,
which is exactly the shape of ``StateStore.update``'s updater, so the same machine runs on the
memory, SQLite and Redis stores and a breaker shared by N replicas behaves as one. They read no
clock and draw no random numbers: the time (``now``, wall-clock epoch seconds, so every replica
agrees and no timezone is involved) and the jitter factor are arguments, because a store may run
an updater more than once under contention.

The document::

    {"state": "closed" | "open" | "half_open",
     "gen": 7,              # bumped on every transition; an outcome reported for an older gen is dropped
     "window": "ssfSF",     # closed: the last window_size outcomes, oldest first
     "until": 1.7e9,        # open: when the break ends
     "break_s": 20.0,       # open / half_open: the current break before jitter; grows on each reopen
     "permits": {"id": expiry, ...},   # half_open: trial permits in flight
     "trial_ok": 1, "trial_slow": 0}   # half_open: trials that succeeded (and how many were slow)

Window codes: ``s`` success, ``f`` failure; upper case when the call was slow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from gateway.core.policy import StoreFailure

State = Literal["closed", "open", "half_open"]
Doc = dict[str, Any]

JITTER = 0.1
"""Breaks are jittered by ±10 % so breakers that opened together do not probe together."""


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """A circuit breaker with the semantics of the mature ones (sliding window, rates, trials)."""

    enabled: bool = True
    per_tool: bool = False
    """Key the breaker on (server, tool) instead of the server alone."""
    window_size: int = 20
    """Outcomes kept in the sliding window (count based)."""
    minimum_calls: int = 10
    """No decision on rates before this many outcomes are in the window."""
    failure_rate: float = 0.5
    """Open when failures / calls in the window reach this."""
    slow_call_rate: float = 1.0
    """Open when slow calls / calls reach this (1.0 disables it in practice)."""
    slow_call_s: float = 10.0
    half_open_calls: int = 3
    """Exactly this many trial calls in half-open; the others fail fast."""
    break_s: float = 10.0
    """The first open period; it grows while the upstream keeps failing."""
    max_break_s: float = 300.0
    break_multiplier: float = 2.0
    on_store_error: StoreFailure = "open"
    fallback: Literal["none", "cached", "tool"] = "none"
    """While open: serve the last good result (read-only tools only), or call ``fallback_tool``."""
    fallback_tool: str | None = None


class Outcome(Enum):
    SUCCESS = "s"
    FAILURE = "f"
    IGNORED = "-"


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a call admitted by ``before`` hands back to ``after``."""

    gen: int
    permit: str | None = None
    """The half-open trial permit this call holds; ``None`` for a call admitted while closed."""


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    state: State
    """The state after this step."""
    ticket: Ticket | None = None
    retry_after_s: float = 0.0
    """When refused: how long until a call may be admitted again."""
    entered: tuple[State, ...] = ()
    """States this step moved into, in order (for the state metric)."""


@dataclass(frozen=True, slots=True)
class Report:
    state: State
    entered: tuple[State, ...] = ()
    counted: bool = False
    """Whether the outcome changed the breaker (False for ignored or stale outcomes)."""


def before(
    doc: Doc | None, settings: BreakerSettings, *, now: float, permit_id: str, lease_s: float
) -> tuple[Doc, Admission]:
    """Admit or refuse one call; may move open to half_open and hand out a trial permit."""
    d = _load(doc)
    if d["state"] == "closed":
        return d, Admission(True, "closed", Ticket(d["gen"]))
    entered: tuple[State, ...] = ()
    if d["state"] == "open":
        if now < d["until"]:
            return d, Admission(False, "open", retry_after_s=d["until"] - now)
        d = _half_open(d)
        entered = ("half_open",)
    if d["trial_ok"] >= settings.half_open_calls:  # half_open_calls lowered by a reload mid-trial
        return _closed(d["gen"] + 1), Admission(True, "closed", Ticket(d["gen"] + 1), entered=("closed",))
    permits = {pid: exp for pid, exp in d["permits"].items() if exp > now}  # a vanished holder's lapses
    if d["trial_ok"] + len(permits) >= settings.half_open_calls:
        d["permits"] = permits
        wait = min(min(permits.values(), default=now) - now, settings.slow_call_s)
        return d, Admission(False, "half_open", retry_after_s=max(0.0, wait), entered=entered)
    d["permits"] = {**permits, permit_id: now + lease_s}
    return d, Admission(True, "half_open", Ticket(d["gen"], permit_id), entered=entered)


def after(
    doc: Doc | None,
    settings: BreakerSettings,
    ticket: Ticket,
    outcome: Outcome,
    *,
    slow: bool,
    now: float,
    jitter: float,
) -> tuple[Doc, Report]:
    """Record one outcome. ``jitter`` is the factor (within 1 ± JITTER) applied if this opens."""
    d = _load(doc)
    if ticket.gen != d["gen"]:
        return d, Report(d["state"])  # the breaker moved on while this call ran
    if ticket.permit is None:
        return _after_closed(d, settings, outcome, slow=slow, now=now, jitter=jitter)
    return _after_trial(d, settings, ticket.permit, outcome, slow=slow, now=now, jitter=jitter)


def release(doc: Doc | None, ticket: Ticket) -> tuple[Doc, Report]:
    """Give a trial permit back without an outcome (the caller cancelled)."""
    d = _load(doc)
    if ticket.permit is None or ticket.gen != d["gen"] or ticket.permit not in d["permits"]:
        return d, Report(d["state"])
    d["permits"] = {k: v for k, v in d["permits"].items() if k != ticket.permit}
    return d, Report(d["state"], counted=True)


def rates(window: str) -> tuple[float, float]:
    """(failure rate, slow-call rate) of a window string."""
    if not window:
        return 0.0, 0.0
    failures = sum(1 for c in window if c in "fF")
    slow = sum(1 for c in window if c.isupper())
    return failures / len(window), slow / len(window)


def _after_closed(
    d: Doc, settings: BreakerSettings, outcome: Outcome, *, slow: bool, now: float, jitter: float
) -> tuple[Doc, Report]:
    if outcome is Outcome.IGNORED or d["state"] != "closed":
        return d, Report(d["state"])
    code = outcome.value.upper() if slow else outcome.value
    window = (d["window"] + code)[-settings.window_size :]
    d["window"] = window
    # minimum_calls above window_size could never be reached; the full window decides instead.
    if len(window) >= min(settings.minimum_calls, settings.window_size):
        failure_rate, slow_rate = rates(window)
        if failure_rate >= settings.failure_rate or slow_rate >= settings.slow_call_rate:
            return _open(d, settings, settings.break_s, now=now, jitter=jitter), Report(
                "open", ("open",), counted=True
            )
    return d, Report("closed", counted=True)


def _after_trial(
    d: Doc,
    settings: BreakerSettings,
    permit: str,
    outcome: Outcome,
    *,
    slow: bool,
    now: float,
    jitter: float,
) -> tuple[Doc, Report]:
    if d["state"] != "half_open" or permit not in d["permits"]:
        return d, Report(d["state"])  # a lapsed permit: it was handed to another caller
    d["permits"] = {k: v for k, v in d["permits"].items() if k != permit}
    if outcome is Outcome.IGNORED:
        return d, Report("half_open", counted=True)  # the permit goes back for another trial
    if outcome is Outcome.FAILURE:
        return _reopen(d, settings, now=now, jitter=jitter)
    d["trial_ok"] += 1
    d["trial_slow"] += 1 if slow else 0
    if d["trial_ok"] < settings.half_open_calls:
        return d, Report("half_open", counted=True)
    if d["trial_slow"] / d["trial_ok"] >= settings.slow_call_rate:
        return _reopen(d, settings, now=now, jitter=jitter)
    return _closed(d["gen"] + 1), Report("closed", ("closed",), counted=True)


def _reopen(d: Doc, settings: BreakerSettings, *, now: float, jitter: float) -> tuple[Doc, Report]:
    previous = float(d.get("break_s") or settings.break_s)
    grown = min(settings.max_break_s, previous * settings.break_multiplier)
    return _open(d, settings, grown, now=now, jitter=jitter), Report("open", ("open",), counted=True)


def _open(d: Doc, settings: BreakerSettings, break_s: float, *, now: float, jitter: float) -> Doc:
    jitter = min(1.0 + JITTER, max(1.0 - JITTER, jitter))
    jittered = min(settings.max_break_s, break_s * jitter)
    return {"state": "open", "gen": d["gen"] + 1, "until": now + jittered, "break_s": break_s}


def _half_open(d: Doc) -> Doc:
    return {
        "state": "half_open",
        "gen": d["gen"] + 1,
        "break_s": d.get("break_s"),
        "permits": {},
        "trial_ok": 0,
        "trial_slow": 0,
    }


def _closed(gen: int) -> Doc:
    return {"state": "closed", "gen": gen, "window": ""}


def _load(doc: Doc | None) -> Doc:
    """A valid working copy of ``doc``; a missing or unreadable document is a fresh closed breaker.

    The input is never mutated: the store may hand the same document to a re-run.
    """
    if not isinstance(doc, dict):
        return _closed(0)
    gen = doc.get("gen")
    gen = gen if isinstance(gen, int) else 0
    state = doc.get("state")
    if state == "open" and _finite(doc.get("until")):
        return {"state": "open", "gen": gen, "until": float(doc["until"]), "break_s": _break(doc)}
    if state == "half_open" and isinstance(doc.get("permits"), dict):
        permits = {str(k): float(v) for k, v in doc["permits"].items() if _finite(v)}
        return {
            "state": "half_open",
            "gen": gen,
            "break_s": _break(doc),
            "permits": permits,
            "trial_ok": _count(doc.get("trial_ok")),
            "trial_slow": _count(doc.get("trial_slow")),
        }
    window = doc.get("window")
    window = "".join(c for c in window if c in "sSfF") if isinstance(window, str) else ""
    return {"state": "closed", "gen": gen, "window": window}


def _break(doc: Doc) -> float | None:
    value = doc.get("break_s")
    return float(value) if isinstance(value, int | float) and _finite(value) and value > 0 else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
