"""A stand-in for the gateway behind the admin plane: a real ``ApprovalService`` on a real state
store, with upstream health, circuits and recent calls set by the test.

It implements ``gateway.web.backend.AdminBackend`` the way ``gateway.app.Gateway`` does for the
parts the web layer sees, and records every decision that went through ``decide`` so a test can
prove the web layer never decided behind the gateway's back (the gateway counts decisions there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.approvals import ApprovalRecord, ApprovalService
from gateway.config import AdminSettings, AdminUser
from gateway.observe.recent import RecentCall, RecentCalls
from gateway.web.backend import CircuitView, UpstreamView
from tests.calls import tool_call

ALICE_TOKEN = "alice-token-0123456789abcdef"
BOB_TOKEN = "bob-token-0123456789abcdef00"


def admins() -> AdminSettings:
    """alice is in ``ops``; bob is in ``support``."""
    return AdminSettings(
        users=[
            AdminUser(name="alice", token=ALICE_TOKEN, groups=["ops"]),  # type: ignore[arg-type]
            AdminUser(name="bob", token=BOB_TOKEN, groups=["support"]),  # type: ignore[arg-type]
        ]
    )


@dataclass
class Decision:
    approval_id: str
    approve: bool
    by: str
    comment: str | None


@dataclass
class StandInGateway:
    approvals: ApprovalService
    admin: AdminSettings = field(default_factory=AdminSettings)
    url: str = "http://127.0.0.1:8080"
    upstream_views: list[UpstreamView] = field(default_factory=list)
    circuit_views: list[CircuitView] = field(default_factory=list)
    calls: RecentCalls = field(default_factory=RecentCalls)
    decisions: list[Decision] = field(default_factory=list)

    def public_url(self) -> str:
        return self.url

    async def decide(
        self, approval_id: str, approve: bool, *, by: str, comment: str | None = None
    ) -> ApprovalRecord:
        self.decisions.append(Decision(approval_id, approve, by, comment))
        return await self.approvals.decide(approval_id, approve, by=by, comment=comment)

    def upstreams(self) -> list[UpstreamView]:
        return list(self.upstream_views)

    def circuits(self) -> list[CircuitView]:
        return list(self.circuit_views)

    def recent_calls(self, limit: int = 50) -> list[RecentCall]:
        return self.calls.newest(limit)

    async def ask(
        self,
        server: str = "crm",
        tool: str = "refund",
        arguments: dict[str, Any] | None = None,
        *,
        client: str = "billing-agent",
        session: str = "sess-7f3a",
        rule: str = "refunds-over-100",
        reason: str = "args.amount > 100",
        timeout_s: float = 900,
        approvers: tuple[str, ...] = (),
        channel: str = "hold",
    ) -> ApprovalRecord:
        """A pending request, as the approval gate would make it for this call."""
        call = tool_call(
            server,
            tool,
            arguments if arguments is not None else {"order_id": "O-1042", "amount": 250},
            principal=client,
            session=session,
        )
        return await self.approvals.request(
            call, rule=rule, reason=reason, timeout_s=timeout_s, approvers=approvers, channel=channel
        )
