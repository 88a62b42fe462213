"""The admin plane's view of the running gateway (``gateway.web.backend.AdminBackend``)."""

from __future__ import annotations

from gateway.approvals import ApprovalRecord, ApprovalService
from gateway.catalog import Catalog
from gateway.config import Config
from gateway.core.net import local_origin
from gateway.observe.recent import RecentCall, RecentCalls
from gateway.upstream import UpstreamPool
from gateway.web.backend import CircuitView, UpstreamView


class AdminView:
    """Reads what the admin plane shows and takes its decisions, through the approval service."""

    def __init__(
        self,
        config: Config,
        approvals: ApprovalService,
        pool: UpstreamPool,
        catalog: Catalog,
        recent: RecentCalls,
        circuit_states: dict[tuple[str, str], str],
    ) -> None:
        self.config = config
        self.admin = config.admin
        self.approvals = approvals
        self._pool = pool
        self._catalog = catalog
        self._recent = recent
        self._circuit_states = circuit_states

    def public_url(self) -> str:
        if self.admin.public_url:
            return self.admin.public_url.rstrip("/")
        return local_origin(self.config.gateway.host, self.config.gateway.port)

    def decide_url(self, approval_id: str) -> str:
        return f"{self.public_url()}/admin/approvals/{approval_id}"

    async def decide(
        self, approval_id: str, approve: bool, *, by: str, comment: str | None = None
    ) -> ApprovalRecord:
        return await self.approvals.decide(approval_id, approve, by=by, comment=comment)

    def upstreams(self) -> list[UpstreamView]:
        tools: dict[str, int] = {}
        for entry in self._catalog.tools.values():
            tools[entry.server] = tools.get(entry.server, 0) + 1
        return [
            UpstreamView(
                id=sid,
                transport=sup.cfg.transport,
                status=sup.health.status,
                required=sup.cfg.required,
                tools=tools.get(sid, 0),
                error=sup.health.last_error,
            )
            for sid, sup in self._pool.supervisors.items()
        ]

    def circuits(self) -> list[CircuitView]:
        return [
            CircuitView(server=server, tool=tool or None, state=state)
            for (server, tool), state in sorted(self._circuit_states.items())
        ]

    def recent_calls(self, limit: int = 50) -> list[RecentCall]:
        return self._recent.newest(limit)
