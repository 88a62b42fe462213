"""Loop detectors: pure functions over one session's recent calls, each returning evidence or None.

Nothing here does I/O or reads a clock: the loop guard loads a session's history from the state
store, asks these functions, and acts on the answer. Every detector judges the *next* call against
what the history already shows, so the call that would continue a loop is the one refused, before
it reaches the upstream: a threshold of N means N occurrences pass and the one after is a loop.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gateway.core.policy import LoopSettings

Kind = Literal[
    "identical_calls", "stuck_polling", "failing_retries", "cycle", "session_budget", "tool_budget"
]
BUDGET_KINDS: frozenset[str] = frozenset({"session_budget", "tool_budget"})

HISTORY_SIZE = 24
"""Entries kept per session: every default threshold with room for other calls in between (more when
a threshold needs more to be reachable, at most 500). Each call re-reads the history, so it stays short."""
MAX_CYCLE = 4
"""Longest cycle looked for: A-B, A-B-C and A-B-C-D."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def call_fingerprint(tool: str, arguments: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """The tool and its canonical arguments (key order and spacing do not matter).

    ``extra`` (a multi-round-trip continuation's ``inputResponses`` / ``requestState``) makes a
    continuation a different call from the one that asked for input."""
    text = f"{tool}\n{_canonical(dict(arguments))}"
    if extra:
        text += f"\n{_canonical(dict(extra))}"
    return _digest(text)


def result_fingerprint(raw: Mapping[str, Any]) -> str:
    """What the agent read: content, structuredContent and isError (not ``_meta``)."""
    return _digest(_canonical([raw.get("content"), raw.get("structuredContent"), raw.get("isError")]))


def error_fingerprint(code: str, message: str) -> str:
    return _digest(f"error\n{code}\n{message}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One admitted call of the session; ``result`` is None while it runs (or if it never ended)."""

    seq: int
    t: float
    tool: str
    fp: str
    result: str | None = None
    failed: bool = False

    @property
    def label(self) -> str:
        """``crm__get_status#1a2b3c4d``: the exposed name and a short call fingerprint."""
        return f"{self.tool}#{self.fp[:8]}"


@dataclass(frozen=True, slots=True)
class History:
    """A session's recent calls (oldest first) and its call counters."""

    entries: tuple[Entry, ...] = ()
    calls: int = 0
    """Calls admitted in this session while its history lived (idle sessions expire)."""
    tools: Mapping[str, int] = field(default_factory=dict)
    """Calls admitted per exposed tool name."""
    since: float | None = None
    """When the session's first counted call was admitted."""

    def within(self, now: float, window_s: float) -> History:
        """The same history without entries older than the window."""
        start = now - window_s
        return replace(self, entries=tuple(e for e in self.entries if e.t >= start))

    def admit(self, tool: str, fp: str, now: float, size: int) -> tuple[History, Entry]:
        entry = Entry(seq=self.calls + 1, t=now, tool=tool, fp=fp)
        tools = dict(self.tools)
        tools[tool] = tools.get(tool, 0) + 1
        kept = (*self.entries, entry)[-size:]
        since = now if self.since is None else self.since
        return History(kept, self.calls + 1, tools, since), entry

    def finish(self, seq: int, fp: str, result: str, failed: bool) -> History:
        entries = tuple(
            replace(e, result=result, failed=failed) if e.seq == seq and e.fp == fp else e
            for e in self.entries
        )
        return replace(self, entries=entries)

    def to_doc(self) -> dict[str, Any]:
        return {
            "v": 1,
            "n": self.calls,
            "since": self.since,
            "tools": dict(self.tools),
            "h": [[e.seq, e.t, e.tool, e.fp, e.result, int(e.failed)] for e in self.entries],
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any] | None) -> History:
        """Reads a stored document; anything unreadable is an empty history, never a crash."""
        if not doc or doc.get("v") != 1:
            return History()
        try:
            entries = tuple(
                Entry(int(s), float(t), str(tool), str(fp), None if r is None else str(r), bool(f))
                for s, t, tool, fp, r, f in doc.get("h", [])
            )
            tools = {str(k): int(v) for k, v in dict(doc.get("tools", {})).items()}
            since = doc.get("since")
            return History(entries, int(doc.get("n", 0)), tools, None if since is None else float(since))
        except (TypeError, ValueError):
            return History()


def history_size(settings: LoopSettings) -> int:
    """Enough entries for every threshold to be reachable, and at least ``HISTORY_SIZE``."""
    needed = max(
        HISTORY_SIZE,
        settings.max_identical_calls + 1,
        settings.max_identical_results + 1,
        settings.max_failing_retries + 1,
        MAX_CYCLE * settings.max_cycle_repeats + 1,
    )
    return min(needed, 500)


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
    kind: Kind, calls: Sequence[str], runs: Sequence[Entry], limit: int, window_s: float
) -> Evidence:
    span = runs[-1].t - runs[0].t if runs else 0.0
    return Evidence(kind, tuple(calls), len(runs), limit, round(span, 3), window_s)


def identical_calls(entries: Sequence[Entry], fp: str, *, limit: int, window_s: float) -> Evidence | None:
    """The same call (tool + canonical arguments) already made ``limit`` times in the window."""
    same = [e for e in entries if e.fp == fp]
    if limit <= 0 or len(same) < limit:
        return None
    return _evidence("identical_calls", [same[-1].label], same, limit, window_s)


def _finished(entries: Sequence[Entry], fp: str) -> list[Entry]:
    return [e for e in entries if e.fp == fp and e.result is not None]


def stuck_polling(entries: Sequence[Entry], fp: str, *, limit: int, window_s: float) -> Evidence | None:
    """The same call got the same (successful) result the last ``limit`` times it ran.

    A result that changes is progress, not a loop: any change starts the count again."""
    done = _finished(entries, fp)
    if limit <= 0 or not done or done[-1].failed:
        return None
    last = done[-1].result
    run: list[Entry] = []
    for e in reversed(done):
        if e.failed or e.result != last:
            break
        run.append(e)
    if len(run) < limit:
        return None
    return _evidence("stuck_polling", [done[-1].label], run[::-1], limit, window_s)


def failing_retries(entries: Sequence[Entry], fp: str, *, limit: int, window_s: float) -> Evidence | None:
    """The same call failed the last ``limit`` times it ran (an ``isError`` result or a refusal)."""
    run: list[Entry] = []
    for e in reversed(_finished(entries, fp)):
        if not e.failed:
            break
        run.append(e)
    if limit <= 0 or len(run) < limit:
        return None
    return _evidence("failing_retries", [run[0].label], run[::-1], limit, window_s)


def cycle(entries: Sequence[Entry], fp: str, *, repeats: int, window_s: float) -> Evidence | None:
    """The last k*repeats calls are ``repeats`` rounds of a cycle of k distinct calls (2 <= k <= 4),
    and this call would start the next round (A-B-A-B-A-B, then A again)."""
    if repeats <= 0:
        return None
    for k in range(2, MAX_CYCLE + 1):
        need = k * repeats
        if len(entries) < need:
            break
        tail = entries[-need:]
        ring = [e.fp for e in tail[:k]]
        if len(set(ring)) != k or ring[0] != fp:
            continue
        if all(e.fp == ring[i % k] for i, e in enumerate(tail)):
            run = entries[-k * _rounds(entries, ring) :]
            ev = _evidence("cycle", [e.label for e in tail[:k]], run, repeats, window_s)
            return replace(ev, count=len(run) // k)
    return None


def _rounds(entries: Sequence[Entry], ring: Sequence[str]) -> int:
    """Complete rounds of ``ring`` at the end of ``entries``."""
    k = len(ring)
    matched = 0
    for i, e in enumerate(reversed(entries)):
        if e.fp != ring[(k - 1 - i) % k]:
            break
        matched += 1
    return matched // k


def session_budget(history: History, *, limit: int | None, window_s: float) -> Evidence | None:
    if limit is None or history.calls < limit:
        return None
    top = sorted(history.tools.items(), key=lambda kv: -kv[1])[:5]
    last = history.entries[-1].t if history.entries else history.since or 0.0
    span = round(last - (history.since if history.since is not None else last), 3)
    return Evidence("session_budget", tuple(name for name, _ in top), history.calls, limit, span, window_s)


def tool_budget(history: History, tool: str, *, limit: int | None, window_s: float) -> Evidence | None:
    used = history.tools.get(tool, 0)
    if limit is None or used < limit:
        return None
    mine = [e for e in history.entries if e.tool == tool]
    last = mine[-1].t if mine else history.since or 0.0
    span = round(last - (history.since if history.since is not None else last), 3)
    return Evidence("tool_budget", (tool,), used, limit, span, window_s)


def budget_evidence(history: History, tool: str, settings: LoopSettings) -> Evidence | None:
    """The hard caps, judged on the session's counters: calls in all, then calls to this tool."""
    return session_budget(
        history, limit=settings.max_calls_per_session, window_s=settings.window_s
    ) or tool_budget(history, tool, limit=settings.max_calls_per_tool_per_session, window_s=settings.window_s)


def loop_evidence(entries: Sequence[Entry], fp: str, settings: LoopSettings) -> Evidence | None:
    """The loop detectors, most specific first. A declared polling tool (``polling_min_interval_s``)
    is expected to repeat identical calls, so only its results (stuck polling) can make it a loop."""
    w = settings.window_s
    return (
        failing_retries(entries, fp, limit=settings.max_failing_retries, window_s=w)
        or stuck_polling(entries, fp, limit=settings.max_identical_results, window_s=w)
        or (
            None
            if settings.polling_min_interval_s is not None
            else identical_calls(entries, fp, limit=settings.max_identical_calls, window_s=w)
        )
        or cycle(entries, fp, repeats=settings.max_cycle_repeats, window_s=w)
    )


def polling_wait(entries: Sequence[Entry], fp: str, now: float, interval_s: float | None) -> float | None:
    """Seconds still to wait before this polling call may run, or None when it may run now."""
    if interval_s is None:
        return None
    previous = next((e for e in reversed(entries) if e.fp == fp), None)
    if previous is None:
        return None
    wait = interval_s - (now - previous.t)
    return wait if wait > 0 else None
