"""All upstreams of one gateway: start, stop, and the terminal step of the call pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.config import Config
from gateway.core import Caller, ToolCall, ToolResult
from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import GatewayError, UpstreamUnavailable
from gateway.upstream.connection import UpstreamConnection
from gateway.upstream.results import malformed_result, result_fault
from gateway.upstream.supervisor import Supervisor, UpstreamEvents, lanes_possible
from gateway.upstream.translate import from_exception, is_protocol_error

log = logging.getLogger("interlock.upstream")


class UpstreamPool:
    def __init__(self, config: Config, events: UpstreamEvents, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.supervisors: dict[str, Supervisor] = {
            sid: Supervisor(sid, cfg, events, clock=self.clock) for sid, cfg in config.servers.items()
        }
        self.extra_lanes: dict[tuple[str, frozenset[str]], Supervisor] = {}
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
        for sup in self.lanes():
            sup.stop()
        with anyio.move_on_after(grace_s):
            for sup in self.lanes():
                if sup.finished is not None:
                    await sup.finished.wait()

    async def connection(self, server: str, caller: Caller | None = None) -> UpstreamConnection:
        """The connection lane a caller should use.

        - A 2026-07-28 upstream serves every 2026-07-28 caller on one connection: each request
          carries the caller's own capabilities.
        - A 2025-11-25 caller of an upstream that speaks both eras gets a 2025-11-25 lane, so
          elicitation, sampling and logging work exactly as the upstream wrote them for that era.
        - Extra lanes are sessions on an HTTP upstream, or extra processes of a stdio upstream
          marked ``stateless``; a stateful stdio upstream is one process with one connection.
        - 2025-11-25 lanes declare at initialize exactly the capabilities of the callers they serve
          (one lane per capability profile), so an upstream never believes a client can answer an
          elicitation it cannot.
        """
        sup = self.supervisors.get(server)
        conn = sup.conn if sup is not None else None
        if sup is None or conn is None:
            reason = sup.health.last_error if sup is not None else "unknown server"
            raise UpstreamUnavailable(f"{server} is not connected", details={"reason": reason or "starting"})
        if not lanes_possible(sup.cfg):
            return conn  # one stdio process: the connection's era, bridged where eras differ
        legacy_caller = caller is not None and _is_legacy(caller.protocol_version)
        if conn.modern and not (legacy_caller and sup.mode == "auto"):
            return conn
        # A 2026-07-28 caller cannot receive server requests, so it declares nothing to a 2025 lane.
        profile = _profile(caller) if caller is not None and legacy_caller else frozenset()
        if not conn.modern and profile == sup.profile:
            return conn
        lane = await self._lane(server, sup, profile)
        return lane.conn if lane is not None and lane.conn is not None else conn

    async def _lane(self, server: str, primary: Supervisor, profile: frozenset[str]) -> Supervisor | None:
        key = (server, profile)
        lane = self.extra_lanes.get(key)
        if lane is None:
            if self._tg is None:
                return None
            lane = Supervisor(
                server,
                primary.cfg,
                primary.events,
                mode="legacy",
                primary=False,
                profile=profile,
                clock=self.clock,
            )
            self.extra_lanes[key] = lane
            await self._tg.start(lane.run)
        if lane.unsupported:
            return None
        if lane.conn is None and lane.first_attempt is not None and not lane.first_attempt.is_set():
            with anyio.move_on_after(primary.cfg.connect_timeout_s):
                await lane.first_attempt.wait()
        return lane

    def lanes(self) -> list[Supervisor]:
        return [*self.supervisors.values(), *self.extra_lanes.values()]

    def timeout_for(self, server: str) -> float:
        cfg = self.config.servers[server]
        return cfg.timeout_s if cfg.timeout_s is not None else self.config.gateway.call_timeout_s

    async def call_tool(self, call: ToolCall) -> ToolResult:
        """The terminal step of every chain: one ``tools/call`` on the upstream."""
        conn = await self.connection(call.server, call.caller)
        params: dict[str, Any] = {**call.extra, "name": call.tool, "arguments": dict(call.arguments)}
        if call.meta:
            params["_meta"] = dict(call.meta)
        timeout = self.timeout_for(call.server)
        if call.deadline is not None:
            timeout = max(0.001, min(timeout, call.deadline - self.clock.monotonic()))
        try:
            raw = await conn.request("tools/call", params, timeout_s=timeout, log_level=call.caller.log_level)
        except GatewayError:
            raise
        except MCPError as exc:
            if is_protocol_error(exc):
                raise  # forwarded to the client unchanged
            raise from_exception(call.server, exc, None) from exc
        fault = result_fault(conn.protocol_version, raw)
        if fault is not None:
            log.warning("%s: tool %r answered with a malformed result (%s)", call.server, call.tool, fault)
            raise malformed_result(call.server, fault)
        return ToolResult(raw)

    async def request(
        self, server: str, method: str, params: Mapping[str, Any] | None, caller: Caller | None = None
    ) -> dict[str, Any]:
        """Forward a non-tool request; upstream JSON-RPC errors propagate unchanged."""
        conn = await self.connection(server, caller)
        level = caller.log_level if caller is not None else None
        return await conn.request(method, params, timeout_s=self.timeout_for(server), log_level=level)


def _is_legacy(protocol_version: str | None) -> bool:
    return protocol_version is not None and protocol_version not in MODERN_PROTOCOL_VERSIONS


_SERVER_REQUEST_CAPABILITIES = ("elicitation", "sampling", "roots")


def _profile(caller: Caller) -> frozenset[str]:
    return frozenset(c for c in _SERVER_REQUEST_CAPABILITIES if caller.can(c))
