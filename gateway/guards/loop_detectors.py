"""Loop detectors: pure functions over one session's recent calls, each returning evidence or None.

Nothing here does I/O or reads a clock: the loop guard loads a session's history from the state
store, asks these functions, and acts on the answer. Every detector judges the *next* call against
what the history already shows, so the call that would continue a loop is the one refused, before
it reaches the upstream: a threshold of N means N occurrences pass and the one after is a loop.

Every call reads and rewrites its session's whole history twice (see ``LoopDetection``), so the
history is kept in the shape the detectors read (``gateway.guards.loop_history``): parallel columns
of plain values, as stored. The common question, "has this call been seen", is then ``list.count``
or ``in``, done in C, and the slower scans run only once a pattern is plausible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from gateway.guards.loop_history import MAX_CYCLE, TRANSIENT, History

if TYPE_CHECKING:
    from gateway.guards.loops import LoopSettings

Kind = Literal[
    "identical_calls", "stuck_polling", "failing_retries", "cycle", "session_budget", "tool_budget"
]
BUDGET_KINDS: frozenset[str] = frozenset({"session_budget", "tool_budget"})


@dataclass(frozen=True, slots=True)
class Evidence:
    kind: Kind
    calls: tuple[str, ...]
    """The calls involved: ``tool#fingerprint`` labels (tool names alone for budgets)."""
    count: int
    """How many times the pattern was seen before the call being judged."""
    limit: int
    """The threshold that was reached."""
    span_s: float
    """Seconds between the first and the last of the counted calls."""
    window_s: float

    @property
    def is_budget(self) -> bool:
        return self.kind in BUDGET_KINDS

    def details(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "calls": list(self.calls),
            "count": self.count,
            "limit": self.limit,
            "span_s": self.span_s,
            "window_s": self.window_s,
        }

    def describe(self) -> str:
        span = f"{self.span_s:g}s"
        what = " -> ".join(self.calls)
        if self.kind == "identical_calls":
            return f"{what} was already called {self.count} times with the same arguments within {span}"
        if self.kind == "stuck_polling":
            return f"{what} returned the same result {self.count} times in a row over {span}"
        if self.kind == "failing_retries":
            return f"{what} failed {self.count} times in a row with the same arguments over {span}"
        if self.kind == "cycle":
            return f"the sequence {what} repeated {self.count} times in a row over {span}"
        if self.kind == "tool_budget":
            return f"this session already called {what} {self.count} times (the limit is {self.limit})"
        return f"this session already made {self.count} calls (the limit is {self.limit})"


def _evidence(
    kind: Kind,
    calls: tuple[str, ...],
    h: History,
    first: int,
    last: int,
    count: int,
    limit: int,
    window_s: float,
) -> Evidence:
    """``count`` occurrences, the first at index ``first`` and the last at ``last``."""
    return Evidence(kind, calls, count, limit, round(h.t[last] - h.t[first], 3), window_s)


def identical_calls(h: History, key: str, *, limit: int, window_s: float) -> Evidence | None:
    """The same call (tool + canonical arguments) already made ``limit`` times in the window."""
    if limit <= 0:
        return None
    count = h.key.count(key)
    if count < limit:
        return None
    same = [i for i, k in enumerate(h.key) if k == key]
    return _evidence("identical_calls", (h.label(same[-1]),), h, same[0], same[-1], count, limit, window_s)


def _answered(h: History, key: str) -> list[int]:
    """Indices of this call's runs that got an answer, latest first: calls still in flight and
    transient failures (the upstream was down, slow or busy) say nothing about the call."""
    keys, res = h.key, h.res
    return [
        i
        for i in range(len(keys) - 1, -1, -1)
        if keys[i] == key and res[i] is not None and not str(res[i]).startswith(TRANSIENT)
    ]


def stuck_polling(h: History, key: str, *, limit: int, window_s: float) -> Evidence | None:
    """The same call got the same (successful) result the last ``limit`` times it ran.

    A result that changes is progress, not a loop: any change starts the count again."""
    if limit <= 0 or key not in h.key:
        return None
    done = _answered(h, key)
    if not done or h.failed(done[0]):
        return None
    # A failed run's result carries the FAILED mark, so it never equals a success's: it ends the run.
    last = h.res[done[0]]
    run = 0
    for i in done:
        if h.res[i] != last:
            break
        run += 1
    if run < limit:
        return None
    return _evidence("stuck_polling", (h.label(done[0]),), h, done[run - 1], done[0], run, limit, window_s)


def failing_retries(h: History, key: str, *, limit: int, window_s: float) -> Evidence | None:
    """The same call failed the last ``limit`` times it ran (an ``isError`` result or a refusal).

    Transient failures are skipped, neither counted nor ending the run: the call that the error
    called retryable is expected to be repeated, and may well succeed once the upstream is back."""
    if limit <= 0 or key not in h.key:
        return None
    done = _answered(h, key)
    run = 0
    for i in done:
        if not h.failed(i):
            break
        run += 1
    if run < limit:
        return None
    return _evidence("failing_retries", (h.label(done[0]),), h, done[run - 1], done[0], run, limit, window_s)


def cycle(h: History, key: str, *, repeats: int, window_s: float) -> Evidence | None:
    """The last k*repeats calls are ``repeats`` rounds of a cycle of k distinct calls (2 <= k <= 4),
    and this call would start the next round (A-B-A-B-A-B, then A again)."""
    if repeats <= 0:
        return None
    keys = h.key
    n = len(keys)
    for k in range(2, MAX_CYCLE + 1):
        need = k * repeats
        if n < need:
            break
        if keys[n - need] != key:  # this call would not start the next round
            continue
        ring = keys[n - need : n - need + k]
        if len(set(ring)) != k or keys[n - need :] != ring * repeats:
            continue
        rounds = _rounds(keys, ring)
        labels = tuple(h.label(i) for i in range(n - need, n - need + k))
        return _evidence("cycle", labels, h, n - k * rounds, n - 1, rounds, repeats, window_s)
    return None


def _rounds(keys: list[str], ring: list[str]) -> int:
    """Complete rounds of ``ring`` at the end of ``keys``."""
    k = len(ring)
    matched = 0
    for i, x in enumerate(reversed(keys)):
        if x != ring[(k - 1 - i) % k]:
            break
        matched += 1
    return matched // k


def session_budget(h: History, *, limit: int | None, window_s: float) -> Evidence | None:
    if limit is None or h.calls < limit:
        return None
    top = sorted(h.tools.items(), key=lambda kv: -kv[1])[:5]
    last = h.t[-1] if h.t else h.since or 0.0
    span = round(last - (h.since if h.since is not None else last), 3)
    return Evidence("session_budget", tuple(name for name, _ in top), h.calls, limit, span, window_s)


def tool_budget(h: History, tool: str, *, limit: int | None, window_s: float) -> Evidence | None:
    used = h.tools.get(tool, 0)
    if limit is None or used < limit:
        return None
    mine = next((i for i in range(len(h.key) - 1, -1, -1) if h.tool(i) == tool), None)
    last = h.t[mine] if mine is not None else h.since or 0.0
    span = round(last - (h.since if h.since is not None else last), 3)
    return Evidence("tool_budget", (tool,), used, limit, span, window_s)


def budget_evidence(h: History, tool: str, settings: LoopSettings) -> Evidence | None:
    """The hard caps, judged on the session's counters: calls in all, then calls to this tool."""
    session_cap, tool_cap = settings.max_calls_per_session, settings.max_calls_per_tool_per_session
    if (session_cap is None or h.calls < session_cap) and (
        tool_cap is None or h.tools.get(tool, 0) < tool_cap
    ):
        return None  # the usual answer, without building the evidence of either
    return session_budget(h, limit=settings.max_calls_per_session, window_s=settings.window_s) or tool_budget(
        h, tool, limit=settings.max_calls_per_tool_per_session, window_s=settings.window_s
    )


def loop_evidence(h: History, key: str, settings: LoopSettings) -> Evidence | None:
    """The loop detectors, most specific first. A declared polling tool (``polling_min_interval_s``)
    is expected to repeat identical calls, so only its results (stuck polling) can make it a loop."""
    if key not in h.key:
        return None  # every detector counts earlier runs of this very call (a cycle starts with it)
    w = settings.window_s
    return (
        failing_retries(h, key, limit=settings.max_failing_retries, window_s=w)
        or stuck_polling(h, key, limit=settings.max_identical_results, window_s=w)
        or (
            None
            if settings.polling_min_interval_s is not None
            else identical_calls(h, key, limit=settings.max_identical_calls, window_s=w)
        )
        or cycle(h, key, repeats=settings.max_cycle_repeats, window_s=w)
    )


def polling_wait(h: History, key: str, now: float, interval_s: float | None) -> float | None:
    """Seconds still to wait before this polling call may run, or None when it may run now."""
    if interval_s is None or key not in h.key:
        return None
    previous = len(h.key) - 1 - h.key[::-1].index(key)  # its latest run
    wait = interval_s - (now - h.t[previous])
    return wait if wait > 0 else None
