"""All upstreams of one gateway: start, stop, and the terminal step of the call pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp.shared.exceptions import MCPError

from gateway.config import Config
from gateway.core import ToolCall, ToolResult
from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import GatewayError, UpstreamUnavailable
from gateway.upstream.connection import UpstreamConnection
from gateway.upstream.supervisor import Supervisor, UpstreamEvents
from gateway.upstream.translate import from_exception

log = logging.getLogger("interlock.upstream")


class UpstreamPool:
    def __init__(self, config: Config, events: UpstreamEvents, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.supervisors: dict[str, Supervisor] = {
            sid: Supervisor(sid, cfg, events) for sid, cfg in config.servers.items()
        }
        self._tg: TaskGroup | None = None

    async def start(self, tg: TaskGroup) -> None:
        """Start every upstream and wait (bounded) for each one's first connection attempt."""
        self._tg = tg
        for sup in self.supervisors.values():
            await tg.start(sup.run)
        longest = max((s.cfg.connect_timeout_s for s in self.supervisors.values()), default=0)
        with anyio.move_on_after(longest + 2):
            for sup in self.supervisors.values():
                if sup.first_attempt is not None:
                    await sup.first_attempt.wait()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop every upstream and wait until their processes are gone (bounded)."""
        for sup in self.supervisors.values():
            sup.stop()
        with anyio.move_on_after(grace_s):
            for sup in self.supervisors.values():
                if sup.finished is not None:
                    await sup.finished.wait()

    def connection(self, server: str) -> UpstreamConnection:
        sup = self.supervisors.get(server)
        conn = sup.conn if sup is not None else None
        if conn is None:
            reason = sup.health.last_error if sup is not None else "unknown server"
            raise UpstreamUnavailable(f"{server} is not connected", details={"reason": reason or "starting"})
        return conn

    def timeout_for(self, server: str) -> float:
        cfg = self.config.servers[server]
        return cfg.timeout_s if cfg.timeout_s is not None else self.config.gateway.call_timeout_s

    async def call_tool(self, call: ToolCall) -> ToolResult:
        """The terminal step of every chain: one ``tools/call`` on the upstream."""
        conn = self.connection(call.server)
        params: dict[str, Any] = {**call.extra, "name": call.tool, "arguments": dict(call.arguments)}
        if call.meta:
            params["_meta"] = dict(call.meta)
        timeout = self.timeout_for(call.server)
        if call.deadline is not None:
            timeout = max(0.001, min(timeout, call.deadline - self.clock.monotonic()))
        try:
            raw = await conn.request("tools/call", params, timeout_s=timeout)
        except GatewayError:
            raise
        except MCPError as exc:
            raise from_exception(call.server, exc, None) from exc
        return ToolResult(raw)

    async def request(self, server: str, method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Forward a non-tool request; upstream JSON-RPC errors propagate unchanged."""
        conn = self.connection(server)
        return await conn.request(method, params, timeout_s=self.timeout_for(server))
