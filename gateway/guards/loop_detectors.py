"""Loop detectors: pure functions over one session's recent calls, each returning evidence or None.

Nothing here does I/O or reads a clock: the loop guard loads a session's history from the state
store, asks these functions, and acts on the answer. Every detector judges the *next* call against
what the history already shows, so the call that would continue a loop is the one refused, before
it reaches the upstream: a threshold of N means N occurrences pass and the one after is a loop.

Every call reads and rewrites its session's whole history twice (see ``LoopDetection``), so the
history is kept in the shape the detectors read: parallel columns of plain values, as stored. The
common question, "has this call been seen", is then ``list.count`` or ``in``, done in C, and the
slower scans run only once a pattern is plausible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from gateway.guards.loops import LoopSettings

Kind = Literal[
    "identical_calls", "stuck_polling", "failing_retries", "cycle", "session_budget", "tool_budget"
]
BUDGET_KINDS: frozenset[str] = frozenset({"session_budget", "tool_budget"})

HISTORY_SIZE = 24
"""Entries kept per session: every default threshold with room for other calls in between (more when
a threshold needs more to be reachable, at most 500). Each call re-reads the history, so it stays short."""
MAX_CYCLE = 4
"""Longest cycle looked for: A-B, A-B-C and A-B-C-D."""

DOC_VERSION = 2
"""The stored layout (``History.to_doc``). 1 held one ``[seq, t, tool, fp, result, failed]`` list per
call; a document of another version reads as an empty history."""
_FP_LEN = 16
"""Hex digits of a fingerprint (64 bits)."""

_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
"""Dataclasses and datetimes go to ``default=str``, as the ``json`` module's encoder sends them."""


def _digest(text: bytes) -> str:
    # BLAKE2b cut to 64 bits by its own parameter: cheaper per call than sha256 through OpenSSL.
    return hashlib.blake2b(text, digest_size=_FP_LEN // 2).hexdigest()


def _canonical_json(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    # surrogatepass: JSON lets a client send a lone surrogate ("\ud800"); it must fingerprint, not crash.
    return text.encode("utf-8", "surrogatepass")


def _canonical(value: Any) -> bytes:
    """Compact JSON with sorted keys, byte for byte what ``json.dumps`` writes for usual values.

    orjson does it in a twentieth of the time. Where the two could disagree on what is equal, the
    ``json`` module decides, as it always did: orjson writes NaN and infinities as ``null`` (so a
    ``null`` anywhere, even inside a string, takes the slow path), and refuses integers beyond 64
    bits and keys that are not strings. What remains differs only in spelling (``1e-7`` for
    ``1e-07``): equal values still give equal bytes, unequal ones unequal bytes."""
    try:
        text = orjson.dumps(value, default=str, option=_SORTED)
    except TypeError:  # orjson.JSONEncodeError
        return _canonical_json(value)
    return _canonical_json(value) if b"null" in text else text


def call_fingerprint(tool: str, arguments: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """The tool and its canonical arguments (key order and spacing do not matter).

    ``extra`` (a multi-round-trip continuation's ``inputResponses`` / ``requestState``) makes a
    continuation a different call from the one that asked for input."""
    text = tool.encode() + b"\n" + _canonical(arguments if type(arguments) is dict else dict(arguments))
    if extra:
        text += b"\n" + _canonical(extra if type(extra) is dict else dict(extra))
    return _digest(text)


def result_fingerprint(raw: Mapping[str, Any]) -> str:
    """What the agent read: content, structuredContent and isError (not ``_meta``)."""
    parts = [raw.get("content"), raw.get("structuredContent"), raw.get("isError")]
    # One orjson pass over the three, as _canonical would, except that an absent part (None) is the
    # ``null`` json writes too: only a ``null`` beyond those could be a NaN, and takes the slow path.
    try:
        text = orjson.dumps(parts, default=str, option=_SORTED)
    except TypeError:  # orjson.JSONEncodeError
        return _digest(_canonical_json(parts))
    if text.count(b"null") != parts.count(None):
        text = _canonical_json(parts)
    return _digest(text)


def error_fingerprint(code: str, message: str) -> str:
    return _digest(f"error\n{code}\n{message}".encode("utf-8", "surrogatepass"))


def call_key(tool: str, fingerprint: str) -> str:
    """How the history knows a call: ``crm__get_status#<call fingerprint>``. The tool name rides
    along (for labels and the tool budget) without a column of its own to store and read."""
    return f"{tool}#{fingerprint}"


FAILED = "!"
"""Marks a failed call's result fingerprint in the ``res`` column (no column of flags to store)."""


@dataclass(slots=True)
class History:
    """A session's recent admitted calls (oldest first) and its call counters.

    One column per field, index ``i`` of each describing the same call: its time ``t``, its
    ``call_key`` and ``res``: None while it runs (or if it never ended), else its result fingerprint,
    prefixed with ``FAILED`` if it failed. A call's entry is found again by its time and key (see
    ``record_result``). Treated as a value: nothing changes the lists it holds."""

    t: list[float] = field(default_factory=list)
    key: list[str] = field(default_factory=list)
    res: list[str | None] = field(default_factory=list)
    calls: int = 0
    """Calls admitted in this session while its history lived (idle sessions expire)."""
    tools: dict[str, int] = field(default_factory=dict)
    """Calls admitted per exposed tool name."""
    since: float | None = None
    """When the session's first counted call was admitted."""
    oldest: float | None = None
    """The earliest of ``t``, as ``from_doc`` found it while checking the times (so ``within`` needs
    no second scan); None: not known."""

    def label(self, i: int) -> str:
        """``crm__get_status#1a2b3c4d``: the exposed name and a short call fingerprint."""
        return str(self.key[i])[: -(_FP_LEN - 8)]

    def tool(self, i: int) -> str:
        return str(self.key[i])[: -(_FP_LEN + 1)]

    def failed(self, i: int) -> bool:
        res = self.res[i]
        return type(res) is str and res.startswith(FAILED)

    def within(self, now: float, window_s: float) -> History:
        """The same history without entries older than the window."""
        if not self.t:
            return self
        start = now - window_s
        oldest = min(self.t) if self.oldest is None else self.oldest
        if oldest >= start:
            return self  # the usual case: nothing has left the window since the last call
        keep = [i for i, t in enumerate(self.t) if t >= start]
        t = [self.t[i] for i in keep]
        key = [self.key[i] for i in keep]
        res = [self.res[i] for i in keep]
        return History(t, key, res, self.calls, self.tools, self.since, min(t) if t else None)

    def admit(self, tool: str, key: str, now: float, size: int) -> dict[str, Any]:
        """The stored document with this call appended (the oldest dropped past ``size``)."""
        cut = max(0, len(self.t) + 1 - size)
        tools = dict(self.tools)
        tools[tool] = tools.get(tool, 0) + 1
        t, keys, res = self.t[cut:], self.key[cut:], self.res[cut:]  # copies: the input stays as it was
        t.append(now)
        keys.append(key)
        res.append(None)
        since = now if self.since is None else self.since
        return {
            "v": DOC_VERSION,
            "n": self.calls + 1,
            "since": since,
            "tools": tools,
            "t": t,
            "key": keys,
            "res": res,
        }

    def to_doc(self) -> dict[str, Any]:
        return {
            "v": DOC_VERSION,
            "n": self.calls,
            "since": self.since,
            "tools": self.tools,
            "t": self.t,
            "key": self.key,
            "res": self.res,
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any] | None) -> History:
        """Reads a stored document; anything unreadable is an empty history, never a crash.

        The lists are taken as they are (a store hands every updater a fresh copy). Checked are the
        values the detectors compute with (counters, times); keys and results are only compared
        and printed, which no value can make fail. This runs on every call: it stays cheap."""
        if not doc or doc.get("v") != DOC_VERSION:
            return History()
        try:
            t, key, res, n, tools, since = (
                doc["t"],
                doc["key"],
                doc["res"],
                doc["n"],
                doc["tools"],
                doc["since"],
            )
        except KeyError:
            return History()
        if (
            type(t) is not list
            or type(key) is not list
            or type(res) is not list
            or not len(t) == len(key) == len(res)
            or type(n) is not int
            or type(tools) is not dict
            or not (since is None or type(since) in _NUMBER)
            or not set(map(type, tools.values())) <= _INT
        ):
            return History()
        # The times, checked by the scan ``within`` needs anyway: min() compares them with each
        # other, and adding 0.0 to the least takes a number; of what JSON holds, only numbers pass.
        try:
            oldest = min(t) + 0.0 if t else None
        except TypeError:
            return History()
        return History(t, key, res, n, tools, since, oldest)


_NUMBER = frozenset({int, float})
_INT = frozenset({int})


def record_result(doc: dict[str, Any], t: float, key: str, result: str, failed: bool) -> dict[str, Any]:
    """The stored document with the result of the call admitted at ``t`` as ``key``.

    Changes ``doc`` in place: every store hands an updater its own freshly decoded copy (see
    ``MemoryStateStore.update``), and copying the column would cost as much as the rest. The time
    tells this call from an earlier run of the same call (and from one of an expired history); a
    document this code cannot read, or without the call (pushed out of the history meanwhile), is
    returned as it is."""
    if doc.get("v") != DOC_VERSION:
        return doc
    ts, keys, results = doc.get("t"), doc.get("key"), doc.get("res")
    if not (type(ts) is list and type(keys) is list and type(results) is list):
        return doc
    if not len(ts) == len(keys) == len(results):
        return doc
    # Latest first: the call is nearly always the last one admitted.
    i = len(ts) - 1
    while i >= 0 and not (ts[i] == t and keys[i] == key):
        i -= 1
    if i < 0:
        return doc
    results[i] = FAILED + result if failed else result
    return doc


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


def _finished(h: History, key: str) -> list[int]:
    """Indices of this call's finished runs, latest first (calls still in flight are skipped)."""
    keys, res = h.key, h.res
    return [i for i in range(len(keys) - 1, -1, -1) if keys[i] == key and res[i] is not None]


def stuck_polling(h: History, key: str, *, limit: int, window_s: float) -> Evidence | None:
    """The same call got the same (successful) result the last ``limit`` times it ran.

    A result that changes is progress, not a loop: any change starts the count again."""
    if limit <= 0 or key not in h.key:
        return None
    done = _finished(h, key)
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
    """The same call failed the last ``limit`` times it ran (an ``isError`` result or a refusal)."""
    if limit <= 0 or key not in h.key:
        return None
    done = _finished(h, key)
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
