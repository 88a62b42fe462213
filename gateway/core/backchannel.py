"""The way back to the client that made a call.

Upstreams sometimes need the calling client while a call runs: progress, log messages, and in the
2025-11-25 era elicitation and sampling requests. The downstream layer sets the caller's back
channel in a context variable for the duration of the call; the upstream layer reads it. Guards
never touch it, which keeps the pipeline free of transport objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Protocol


class BackChannel(Protocol):
    session_key: str
    capabilities: Mapping[str, Any]

    async def request(self, method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Send a request to the client on the originating call's stream and return its raw result."""
        ...

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        """Relay progress for the originating call, under the client's own progress token."""
        ...

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        """Relay a request-scoped notification (e.g. a log message) to the client."""
        ...


current_backchannel: ContextVar[BackChannel | None] = ContextVar("interlock_backchannel", default=None)
