"""A session's call history as the state store keeps it, and the fingerprints it is made of.

One JSON document per session (see ``History``), read and rewritten twice per call by the loop
guard, so it is kept in the shape the detectors read (``gateway.guards.loop_detectors``): parallel
columns of plain values. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from gateway.guards.loops import LoopSettings

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
TRANSIENT = "~"
"""Marks a transient failure's (the upstream was down, slow or asked to slow down: the gateway
called the error ``retryable``). The call got no answer, so the detectors that judge answers skip
it as they skip a call still in flight."""


@dataclass(slots=True)
class History:
    """A session's recent admitted calls (oldest first) and its call counters.

    One column per field, index ``i`` of each describing the same call: its time ``t``, its
    ``call_key`` and ``res``: None while it runs (or if it never ended), else its result fingerprint,
    prefixed with ``FAILED`` if it failed, ``TRANSIENT`` if it failed transiently. A call's entry is
    found again by its time and key (see ``record_result``). Treated as a value: nothing changes the
    lists it holds."""

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
    wait: dict[str, Any] = field(default_factory=dict)
    """``{call key: [until, code]}``: the call last failed with ``code``, whose ``retry_after_s``
    asked not to repeat it before wall time ``until``. As stored: ``retry_wait`` checks an entry
    when it reads it. Only calls still in the history keep one, and only until it is over."""

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
        return History(t, key, res, self.calls, self.tools, self.since, min(t) if t else None, self.wait)

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
        doc = {
            "v": DOC_VERSION,
            "n": self.calls + 1,
            "since": since,
            "tools": tools,
            "t": t,
            "key": keys,
            "res": res,
        }
        if self.wait:  # rare: only after a transient failure that said how long to wait
            kept = set(keys)
            live = {k: w for k, w in self.wait.items() if k in kept and _until(w) > now}
            if live:
                doc["wait"] = live
        return doc

    def to_doc(self) -> dict[str, Any]:
        doc = {
            "v": DOC_VERSION,
            "n": self.calls,
            "since": self.since,
            "tools": self.tools,
            "t": self.t,
            "key": self.key,
            "res": self.res,
        }
        if self.wait:
            doc["wait"] = self.wait
        return doc

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
        wait = doc.get("wait")
        return History(t, key, res, n, tools, since, oldest, wait if type(wait) is dict else {})


_NUMBER = frozenset({int, float})
_INT = frozenset({int})


def _until(entry: Any) -> float:
    """The end of a stored wait, or -inf for anything that is not one."""
    if type(entry) is list and len(entry) == 2 and type(entry[0]) in _NUMBER and type(entry[1]) is str:
        return float(entry[0])
    return float("-inf")


def retry_wait(h: History, key: str, now: float) -> tuple[float, str] | None:
    """Seconds still to wait before this call may be repeated, and the code of the failure that
    asked for the wait; None when it may run now."""
    if not h.wait:
        return None  # the usual case
    entry = h.wait.get(key)
    left = _until(entry) - now
    return (left, str(entry[1])) if entry is not None and left > 0 else None


def record_result(
    doc: dict[str, Any],
    t: float,
    key: str,
    result: str,
    failed: bool,
    *,
    transient: bool = False,
    wait: tuple[float, str] | None = None,
) -> dict[str, Any]:
    """The stored document with the result of the call admitted at ``t`` as ``key``.

    ``transient``: it failed for a reason that may pass (marked ``TRANSIENT``, whatever ``failed``
    says); ``wait``: (until, code), the failure asked not to repeat the call before ``until``.

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
    results[i] = TRANSIENT + result if transient else FAILED + result if failed else result
    if wait is not None:
        waits = doc.get("wait")
        if type(waits) is not dict:
            waits = doc["wait"] = {}
        waits[key] = [wait[0], wait[1]]
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
