"""A realistic admin dashboard in mid-incident: three pending approvals (a refund, a production
rollback, a bulk delete only the DBAs may approve), a few decided ones, upstream health with one
server down and one circuit open, and the last calls with mixed outcomes.

Used by ``scripts/screenshot_admin.py`` for docs/img/admin.png, and by a test that keeps it rendering.
"""

from __future__ import annotations

from gateway.approvals import ApprovalService
from gateway.config import AdminSettings
from gateway.core.clock import ManualClock
from gateway.observe.recent import RecentCall
from gateway.state import MemoryStateStore
from gateway.web.backend import CircuitView, UpstreamView
from tests.web.backend import StandInGateway

UPSTREAMS = [
    UpstreamView("crm", "http", "up", True, 14),
    UpstreamView("deploy", "stdio", "up", True, 6),
    UpstreamView("github", "http", "up", False, 31),
    UpstreamView(
        "postgres", "stdio", "down", False, 0, "exited with code 1: could not connect to db-primary:5432"
    ),
    UpstreamView("search", "http", "starting", False, 0),
]
CIRCUITS = [
    CircuitView("crm", None, "closed"),
    CircuitView("postgres", None, "open"),
    CircuitView("github", "search_code", "half_open"),
    CircuitView("deploy", None, "closed"),
]
# (seconds ago, tool, client, outcome, duration ms)
CALLS = [
    (2, "crm__refund", "billing-agent", "approval_required", 3.1),
    (5, "deploy__rollback", "sre-copilot", "approval_required", 2.4),
    (9, "postgres__query", "sre-copilot", "circuit_open", 0.4),
    (14, "crm__get_customer", "billing-agent", "ok", 84.0),
    (21, "github__search_code", "sre-copilot", "upstream_timeout", 30012.0),
    (26, "deploy__status", "sre-copilot", "ok", 212.0),
    (33, "crm__list_orders", "billing-agent", "ok", 131.0),
    (41, "postgres__query", "data-cleanup", "upstream_unavailable", 12.0),
    (47, "crm__search", "billing-agent", "rate_limited", 0.6),
    (58, "github__get_file", "sre-copilot", "ok", 96.0),
    (66, "crm__get_customer", "billing-agent", "tool_error", 77.0),
    (79, "deploy__status", "sre-copilot", "ok", 188.0),
    (95, "crm__get_customer", "billing-agent", "ok", 69.0),
]


async def demo_gateway(clock: ManualClock, admin: AdminSettings) -> StandInGateway:
    gateway = StandInGateway(ApprovalService(MemoryStateStore(clock), clock), admin)
    gateway.upstream_views = list(UPSTREAMS)
    gateway.circuit_views = list(CIRCUITS)

    # History first (oldest first, as it happened), then what is waiting now.
    old = await gateway.ask(
        arguments={"order_id": "O-88390", "amount": 120, "currency": "EUR"}, timeout_s=900
    )
    await gateway.decide(old.id, True, by="alice", comment="verified with the customer on the phone")
    clock.advance(240)
    scale = await gateway.ask(
        "deploy",
        "scale",
        {"service": "checkout-api", "replicas": 0, "environment": "production"},
        client="sre-copilot",
        session="sess-91c0",
        rule="prod-deploys",
        reason="destructive tool on a trusted server",
        approvers=("ops",),
    )
    await gateway.decide(scale.id, False, by="bob", comment="not during the freeze; scale to 2 instead")
    clock.advance(60)
    await gateway.ask(
        "github",
        "merge_pull_request",
        {"repo": "acme/checkout", "number": 4821},
        client="sre-copilot",
        rule="merges",
        reason="merges need a human",
        timeout_s=30,
    )
    clock.advance(300)

    await gateway.ask(
        arguments={
            "order_id": "O-88412",
            "amount": 250,
            "currency": "EUR",
            "reason": "duplicate charge",
            "customer": {"id": "C-10293", "email": "j.doe@example.com"},
        },
        rule="refunds-over-100",
        reason="args.amount > 100",
        approvers=("ops", "billing-leads"),
        timeout_s=900,
    )
    clock.advance(35)
    await gateway.ask(
        "deploy",
        "rollback",
        {
            "service": "checkout-api",
            "environment": "production",
            "to_version": "2026.11.24-3",
            "why": "p95 latency 4.2 s since 2026.11.25-1",
        },
        client="sre-copilot",
        session="sess-91c0",
        rule="prod-deploys",
        reason="destructive tool on a trusted server",
        approvers=("ops",),
        timeout_s=420,
    )
    clock.advance(20)
    await gateway.ask(
        "postgres",
        "delete_rows",
        {
            "table": "customers",
            "where": "last_login < '2023-01-01'",
            "limit": 5000,
            "connection": {"host": "db-primary", "password": "hunter2"},
        },
        client="data-cleanup",
        session="sess-0d4e",
        rule="bulk-deletes",
        reason="deletes more than 100 rows",
        approvers=("dba",),
        timeout_s=110,
    )
    now = clock.wall()
    for ago, tool, client, outcome, ms in reversed(CALLS):  # the ring is filled oldest first
        server = tool.split("__", 1)[0]
        gateway.calls.add(RecentCall(now - ago, server, tool, client, outcome, ms, f"r-{ago}"))
    return gateway
