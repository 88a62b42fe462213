"""The composition root: builds the gateway from config and owns start and stop."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from starlette.applications import Starlette

from gateway.catalog import Catalog, ToolEntry
from gateway.config import Config, PolicyContext, PolicySet
from gateway.core import Caller, ToolResult, build_chain
from gateway.core.clock import Clock, SystemClock
from gateway.core.errors import NotFound
from gateway.downstream.caller import new_request_id
from gateway.downstream.handlers import Handlers, Pipeline
from gateway.downstream.http import build_http_app
from gateway.downstream.server import GatewayServer, build_server
from gateway.guards import GuardDeps, ordered_guards
from gateway.guards.breaker import STATE_GAUGE
from gateway.guards.pinning import PinBook, SeenTool
from gateway.observe.metrics import Metrics
from gateway.observe.observer import observed
from gateway.reload import PolicyHolder
from gateway.state import MemoryStateStore, StorePins, open_store
from gateway.upstream import UpstreamPool

log = logging.getLogger("interlock")

_PIN_REFRESH_S = 2.0  # how soon an operator's `interlock pins accept` takes effect


class Gateway:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.catalog = Catalog(config)
        self.policy = PolicyHolder(config.policies_dir, self._on_policy_change)
        base = config.source.parent if config.source else Path.cwd()
        # What must survive a restart (pins) goes to the configured store. Counters (rate limits,
        # loop histories, breakers) share it only when it is shared (Redis): with the embedded
        # SQLite default they stay in memory, where a decision costs microseconds, not a disk write.
        self.durable = open_store(config.gateway.state, base, self.clock)
        shared = config.gateway.state.split("://", 1)[0] in ("redis", "rediss", "memory")
        self.store = self.durable if shared else MemoryStateStore(self.clock)
        self.pins = PinBook(StorePins(self.durable), self.clock, self._on_pin_change)
        self.pool = UpstreamPool(config, events=self, clock=self.clock)
        deps = GuardDeps(
            resolver=lambda call: self.policy.current.resolve_call(call),
            pins=self.pins,
            lookup=self.run_lookup,
            clock=self.clock,
            store=self.store,
            on_circuit_state=self._on_circuit_state,
            on_rate_limited=lambda server, tool: self.metrics.rate_limited.labels(server, tool).inc(),
            on_loop=lambda kind: self.metrics.loops_detected.labels(kind).inc(),
        )
        self.pipeline = Pipeline(
            observed(build_chain(ordered_guards(deps), self.pool.call_tool), self.metrics)
        )
        self.handlers = Handlers(
            config, self.catalog, self.pool, self.pipeline, visibility=self.visible_tools
        )
        self.server: GatewayServer = build_server(self.handlers)
        self._tg: TaskGroup | None = None
        self._visible: dict[str, tuple[tuple[Any, ...], list[Mapping[str, Any]]]] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        async with anyio.create_task_group() as tg:
            for sid in self.config.servers:
                self.metrics.upstream_up.labels(sid).set(0)
                self.metrics.upstream_restarts.labels(sid)
            await self.pool.start(tg)
            await self._catalog_changed(announce=False)
            self._tg = tg
            tg.start_soon(self.policy.watch)
            tg.start_soon(self.policy.watch_sighup)
            tg.start_soon(self._refresh_pins)
            log.info(
                "gateway ready: %d tools from %d servers", len(self.catalog.tools), len(self.config.servers)
            )
            try:
                yield self
            finally:
                self._tg = None
                with anyio.CancelScope(shield=True):
                    await self.pool.stop()
                    await self.store.close()
                    if self.durable is not self.store:
                        await self.durable.close()
                tg.cancel_scope.cancel()

    def http_app(self) -> Starlette:
        return build_http_app(
            self.server,
            self.config.gateway,
            readiness=self.readiness,
            metrics=self.metrics.render,
            lifespan=self.running,
        )

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {}
        ready = True
        for sid, sup in self.pool.supervisors.items():
            detail[sid] = {"status": sup.health.status, "required": sup.cfg.required}
            if sup.health.last_error:
                detail[sid]["error"] = sup.health.last_error
            if sup.cfg.required and sup.health.status != "up":
                ready = False
        return ready, detail

    # -- the catalog as each client sees it ------------------------------------------------

    def visible_tools(self, caller: Caller) -> list[Mapping[str, Any]]:
        """The tools this caller may see: access policy and pins applied, cached per state."""
        policies = self.policy.current
        state = (self.catalog.version, policies.digest, self.pins.blocked)
        cached = self._visible.get(caller.principal)
        if cached is not None and cached[0] == state:
            return cached[1]
        tools = [
            entry.definition
            for entry in self.catalog.tools.values()
            if entry.exposed_name not in self.pins.blocked
            and policies.is_listed(_context(entry, caller.principal))
        ]
        if len(self._visible) > 10_000:
            self._visible.clear()
        self._visible[caller.principal] = (state, tools)
        return tools

    async def run_lookup(self, exposed_name: str, arguments: Mapping[str, Any], caller: Caller) -> ToolResult:
        """A reference check's lookup, run through the same pipeline as any call."""
        entry = self.catalog.tools.get(exposed_name)
        if entry is None:
            raise NotFound(f"lookup tool {exposed_name} is not in the catalog")
        return await self.pipeline.run(entry.call(arguments, caller, new_request_id()))

    # -- keeping the catalog, pins and policy in step ---------------------------------------

    async def _catalog_changed(self, *, announce: bool = True) -> None:
        # A server that dropped keeps its last known tools listed: calls to them answer
        # upstream_unavailable (retryable, with a hint) instead of a confusing "unknown tool".
        self.catalog.rebuild({sid: sup.lists for sid, sup in self.pool.supervisors.items()})
        policies = self.policy.current
        seen = [
            SeenTool(e.server, e.upstream_name, e.exposed_name, e.digest) for e in self.catalog.tools.values()
        ]
        try:
            await self.pins.reconcile(seen, lambda t: policies.resolve(_seen_context(t)).pinning)
        except Exception:  # a broken state store must not take the catalog down
            log.exception("tool pins could not be checked")
        if announce:
            await self.handlers.announce_lists_changed()

    async def _refresh_pins(self) -> None:
        while True:
            await anyio.sleep(_PIN_REFRESH_S)
            try:
                if await self.pins.refresh():
                    await self.handlers.announce_lists_changed()
            except Exception:
                log.exception("tool pins could not be refreshed")

    def _on_policy_change(self, _: PolicySet) -> None:
        if self._tg is not None:  # access and pinning modes may have changed what is listed
            self._tg.start_soon(self._catalog_changed)

    def _on_circuit_state(self, server: str, tool: str, state: str) -> None:
        self.metrics.circuit_state.labels(server, tool).set(STATE_GAUGE[state])

    def _on_pin_change(self, server: str, tool: str) -> None:
        self.metrics.pin_changes.labels(server, tool).inc()

    # -- upstream events -------------------------------------------------------------------

    def on_health(self, server: str, up: bool) -> None:
        self.metrics.upstream_up.labels(server).set(1 if up else 0)

    def on_restart(self, server: str) -> None:
        self.metrics.upstream_restarts.labels(server).inc()

    def on_lists_changed(self, server: str) -> None:
        if self._tg is not None:
            self._tg.start_soon(self._catalog_changed)

    def on_resource_updated(self, server: str, uri: str) -> None:
        if self._tg is not None:
            self._tg.start_soon(self.handlers.announce_resource_updated, server, uri)


def _context(entry: ToolEntry, client: str) -> PolicyContext:
    return PolicyContext(
        server=entry.server,
        tool=entry.upstream_name,
        exposed=entry.exposed_name,
        client=client,
        annotations=entry.annotations,
    )


def _seen_context(tool: SeenTool) -> PolicyContext:
    return PolicyContext(server=tool.server, tool=tool.tool, exposed=tool.exposed)
