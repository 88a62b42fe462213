"""The breaker's cached fallback: the last good result of a read-only call, per replica."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from gateway.core import ToolCall, ToolResult


class ResultCache:
    """Last good results by (server, tool, canonical arguments), bounded LRU, in this process only.

    Each replica keeps its own: a replica that never served the call has nothing to fall back on.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, str], tuple[ToolResult, float]] = OrderedDict()

    def put(self, call: ToolCall, result: ToolResult, now: float) -> None:
        if result.input_required or self.max_entries <= 0:
            return
        key = _cache_key(call)
        self._entries[key] = (result, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, call: ToolCall) -> tuple[ToolResult, float] | None:
        key = _cache_key(call)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def __len__(self) -> int:
        return len(self._entries)


def _cache_key(call: ToolCall) -> tuple[str, str, str]:
    arguments = json.dumps(call.arguments, sort_keys=True, separators=(",", ":"), default=str)
    return call.server, call.tool, arguments


def mark_cached(result: ToolResult, age_s: float) -> ToolResult:
    age = max(0, round(age_s))
    raw = with_meta(result.raw, {"kind": "cached", "age_s": age})
    note = {"type": "text", "text": f"Served from cache {age} s old: the service is unavailable."}
    raw["content"] = [*result.content, note]
    return ToolResult(raw, result.notes).noted("fallback_cached")


def with_meta(raw: Mapping[str, Any], marker: dict[str, Any]) -> dict[str, Any]:
    meta = raw.get("_meta")
    return {**raw, "_meta": {**(meta if isinstance(meta, Mapping) else {}), "interlock/fallback": marker}}
