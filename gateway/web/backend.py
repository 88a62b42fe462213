"""What the admin plane needs from the running gateway, as one small interface.

The gateway (``gateway.app.Gateway``) implements it; the web layer never reaches into the pool,
the guards or the store directly, which keeps it testable against a fake and keeps the layers apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.approvals import ApprovalRecord, ApprovalService
from gateway.config import AdminSettings
from gateway.observe.recent import RecentCall


@dataclass(frozen=True, slots=True)
class UpstreamView:
    id: str
    transport: str
    """``stdio`` or ``http``."""
    status: str
    """``up``, ``starting``, ``down``, ... as the supervisor reports it."""
    required: bool
    tools: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CircuitView:
    server: str
    tool: str | None
    """``None`` when the breaker is per server."""
    state: str
    """``closed``, ``open`` or ``half_open``."""


class AdminBackend(Protocol):
    admin: AdminSettings
    approvals: ApprovalService

    def public_url(self) -> str:
        """Where humans reach this gateway, without a trailing slash (e.g. http://127.0.0.1:8080)."""
        ...

    async def decide(
        self, approval_id: str, approve: bool, *, by: str, comment: str | None = None
    ) -> ApprovalRecord:
        """Take a decision (exactly once): the one way the admin plane decides, so the gateway sees
        (and logs, counts, announces) it as it sees every channel's. Raises the service's
        ``UnknownApproval``, ``DecisionConflict`` or ``ApprovalExpired``."""
        ...

    def upstreams(self) -> list[UpstreamView]: ...

    def circuits(self) -> list[CircuitView]: ...

    def recent_calls(self, limit: int = 50) -> list[RecentCall]: ...
