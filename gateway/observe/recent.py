"""The last calls the gateway ran, kept in memory for the admin page's "recent calls" panel.

A bounded ring per process: cheap enough for the hot path (one append), and enough for an
operator watching an incident. History across replicas belongs to metrics and logs, not here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecentCall:
    at: float
    """Wall-clock epoch seconds when the call started."""
    server: str
    tool: str
    """The exposed (namespaced) name the agent called."""
    client: str
    outcome: str
    """``ok``, ``tool_error``, ``input_required``, ``protocol_error`` or a gateway error code."""
    duration_ms: float
    request_id: str


class RecentCalls:
    def __init__(self, size: int = 200) -> None:
        self._calls: deque[RecentCall] = deque(maxlen=size)

    def add(self, call: RecentCall) -> None:
        self._calls.append(call)

    def newest(self, limit: int = 50) -> list[RecentCall]:
        calls = list(self._calls)
        calls.reverse()
        return calls[:limit]
